"""Retrieval evaluation: ``python eval.py --checkpoint DIR [--config CONFIG] [--split test|val] [--out DIR]``."""

import sys

from clibd.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
