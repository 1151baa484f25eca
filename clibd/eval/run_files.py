"""Names of the files an evaluation writes into its folder that the run report (``clibd serve
--run``) reads: here, not in the modules that write them, so the server imports none of their
plotting and clustering libraries (matplotlib, scikit-learn) to know a file name."""

MAP_FILE, PICTURE_FILE = "embeddings_map.csv", "embeddings.png"
