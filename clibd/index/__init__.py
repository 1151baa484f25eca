"""Reference libraries: the FAISS index, the calibrated library, the taxonomy vote."""
