"""Retrieval evaluation: ``python eval.py --checkpoint DIR [--config CONFIG] [--split test|val] [--out DIR]``,
or of the original CLIBD's released embeddings: ``python eval.py --embeddings FILE.hdf5 [--labels FILE.json]``."""

import sys

from clibd.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
