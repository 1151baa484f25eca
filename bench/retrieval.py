"""Retrieval evaluation speed: vectorised top-k metrics vs the per-query reference, and exact
FAISS search (``ReferenceIndex``, flat) vs a chunked torch matmul + topk, on the same data."""

from __future__ import annotations

import numpy as np
import torch

from bench.common import Result, best_time
from clibd.metrics import topk_accuracy
from clibd.retrieval import ReferenceIndex, normalized_float32
from clibd.taxonomy import EVAL_RANKS
from tests.oracles import topk_accuracy_reference


def _metrics(quick: bool) -> Result:
    n, k, ks = (10_000 if quick else 50_000), 5, (1, 3, 5)
    rng = np.random.default_rng(0)
    classes = np.array([55, 934, 7605, 22622])  # BIOSCAN-5M class counts per rank
    truth = rng.integers(-1, classes, size=(n, 4))
    neighbours = np.where(rng.random((n, k, 4)) < 0.5, truth[:, None, :], rng.integers(0, classes, size=(n, k, 4)))
    ours = best_time(lambda: topk_accuracy(truth, neighbours, ks, EVAL_RANKS), repeat=3)
    base = best_time(lambda: topk_accuracy_reference(truth, neighbours, ks, EVAL_RANKS), repeat=1)
    return Result(
        benchmark="top-k metrics",
        workload=f"{n:,} queries x {k} neighbours x 4 ranks, top-1/3/5 micro+macro",
        ours=ours * 1e3,
        baseline=base * 1e3,
        unit="ms",
        ratio=base / ours,
        goal=100.0,
        note="baseline: plain per-query Python (tests/oracles.py)",
    )


def _torch_topk(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    out = [torch.topk(queries[i : i + chunk] @ keys.T, k, dim=1).indices for i in range(0, len(queries), chunk)]
    return torch.cat(out)


def _exact_search(device: str, quick: bool) -> Result:
    n_queries, n_keys, dim, k = 5_000, (20_000 if quick else 100_000), 768, 5
    rng = np.random.default_rng(0)
    keys = normalized_float32(rng.standard_normal((n_keys, dim), dtype=np.float32), "keys")
    queries = normalized_float32(rng.standard_normal((n_queries, dim), dtype=np.float32), "queries")
    index = ReferenceIndex(dim, "flat", device="cuda" if device == "cuda" else "cpu")
    index.add(keys, np.arange(n_keys).astype(str))
    ours = best_time(lambda: index.search(queries, k), repeat=1 if not quick else 2)
    t_keys, t_queries = torch.from_numpy(keys).to(device), torch.from_numpy(queries).to(device)

    def torch_search() -> torch.Tensor:
        top = _torch_topk(t_queries, t_keys, k)
        if device == "cuda":
            torch.cuda.synchronize()
        return top

    base = best_time(torch_search, repeat=1 if not quick else 2)
    agree = float((index.search(queries[:500], 1)[1][:, 0] == torch_search()[:500, 0].cpu().numpy()).mean())
    return Result(
        benchmark="exact search",
        workload=f"{n_queries:,} x {n_keys:,} keys x {dim}-d, top-{k}, {device}",
        ours=ours,
        baseline=base,
        unit="s",
        ratio=base / ours,
        goal=1.0,
        note=f"baseline: chunked torch matmul + topk ({torch.get_num_threads()} threads); top-1 agreement {agree:.3f}",
    )


def run(device: str, quick: bool) -> list[Result]:
    return [_metrics(quick), _exact_search(device, quick)]
