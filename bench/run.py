"""Run every benchmark, print one table, write bench/results.json.

``make bench``, ``python -m bench`` or ``python bench/run.py [--device cuda] [--only NAME ...] [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import REPO, Result  # noqa: E402

# Benchmark modules, each with run(device, quick) -> list[Result].
BENCHMARKS = [
    "tokenization",
    "pipeline",
    "metadata",
    "retrieval",
    "metrics",
    "train_step",
    "embedding",
    "serve",
    "library_scale",
    "startup",
    "stream_classify",
]


def goal_text(r: Result) -> str:
    return "-" if r.goal is None else f">= {r.goal:g}x"


def print_table(results: list[Result]) -> None:
    header = ("benchmark", "workload", "ours", "baseline", "unit", "ratio", "goal", "met", "note")
    rows = [
        (
            r.benchmark,
            r.workload,
            f"{r.ours:,.4g}",
            f"{r.baseline:,.4g}",
            r.unit,
            f"{r.ratio:.2f}x",
            goal_text(r),
            {True: "yes", False: "NO", None: "-"}[r.met],
            r.note,
        )
        for r in results
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", nargs="*", default=None, choices=BENCHMARKS)
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU on this machine (the GPU variants need one)")
    results: list[Result] = []
    failed: list[str] = []
    for name in args.only or BENCHMARKS:
        start = time.perf_counter()
        try:
            results.extend(importlib.import_module(f"bench.{name}").run(args.device, args.quick))
        except Exception:  # one broken benchmark must not cost the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"[{name}: {time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    print_table(results)
    args.out.write_text(json.dumps([r.as_dict() for r in results], indent=2))
    print(f"\nwrote {args.out}")
    if failed:
        print(f"FAILED benchmarks: {', '.join(failed)}")
    return 0 if not failed and all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
