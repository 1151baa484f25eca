"""Evaluation: retrieval metrics, the seen/unseen protocol, clustering, the DNA benchmark."""
