"""``clibd demo-data OUT``: write the synthetic demo dataset in BIOSCAN-5M layout and summarise it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from clibd.data.demo import DEFAULT_SPECIMENS, generate_demo
from clibd.data.demo.summary import summarise

SUMMARY_FILE = "demo_summary.txt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="folder to create; the dataset goes to OUT/bioscan5m")
    parser.add_argument("--specimens", type=int, default=DEFAULT_SPECIMENS, help="number of specimens")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        table = generate_demo(args.out, args.specimens, args.seed)
    except (FileExistsError, ValueError) as err:
        print(f"clibd demo-data: {err}", file=sys.stderr)
        return 2
    summary = summarise(table)
    (args.out / SUMMARY_FILE).write_text(summary + "\n")
    print(
        f"wrote {len(table)} specimens to {args.out} in {time.perf_counter() - start:.1f} s "
        f"(seed {args.seed}; summary in {args.out / SUMMARY_FILE})\n{summary}"
    )
    return 0
