"""Contrastive training: ``python train.py [--config CONFIG] [--out DIR] [--resume latest] [key=value ...]``.

With no arguments it trains the demo config on the embedded demo data (generated if absent).
"""

import sys

from clibd.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
