"""Retrieval metrics: vectorised top-1/3/5 micro + macro accuracy at 4 ranks vs the plain
per-query Python loop the tests check it against (tests/oracles.py)."""

from __future__ import annotations

import numpy as np

from bench.common import Result, best_time
from clibd.eval.metrics import topk_accuracy
from clibd.taxonomy import EVAL_RANKS
from tests.oracles import topk_accuracy_reference

CLASSES = np.array([55, 934, 7605, 22622])  # BIOSCAN-5M class counts per rank


def run(device: str, quick: bool) -> list[Result]:
    n, k, ks = (10_000 if quick else 50_000), 5, (1, 3, 5)
    rng = np.random.default_rng(0)
    truth = rng.integers(-1, CLASSES, size=(n, 4))
    neighbours = np.where(rng.random((n, k, 4)) < 0.5, truth[:, None, :], rng.integers(0, CLASSES, size=(n, k, 4)))
    ours = best_time(lambda: topk_accuracy(truth, neighbours, ks, EVAL_RANKS), repeat=3)
    base = best_time(lambda: topk_accuracy_reference(truth, neighbours, ks, EVAL_RANKS), repeat=1)
    return [
        Result.timed(
            "top-k metrics",
            f"{n:,} queries x {k} neighbours x 4 ranks, top-1/3/5 micro+macro",
            n,
            ours,
            base,
            "queries/s",
            goal=100.0,
            note=f"{ours * 1e3:.1f} ms vs {base * 1e3:.0f} ms;"
            f" baseline: the per-query Python oracle of the tests (tests/oracles.py)",
        )
    ]
