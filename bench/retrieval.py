"""Exact retrieval search speed: top-5 through ``ReferenceIndex`` (FAISS flat) against a chunked
torch matmul + topk on the same isotropic random unit vectors, 5 000 queries in one call (eval.py's
shape). The CPU default is 100k keys (the full 500k x 5k x 768 d is ~4 TFLOP: minutes per pass on 2
cores); ``--device cuda`` runs the full size.

Approximate search is measured per kind, at the shapes users run (one query, a classify batch,
eval.py's batch) with recall@1 and memory, in bench/library_scale.py. Its old row here (IVF vs flat,
5 000 queries x 100k keys, goal 10x) measured the batch shape where flat's GEMM wins at that size
(~1.2x at recall 0.99); docs/scale.md, "Search as users run it".
"""

from __future__ import annotations

import numpy as np
import torch

from bench.common import Result, best_time
from bench.compute import check_device, sync
from clibd.index.faiss_index import ReferenceIndex, normalized_float32

N_QUERIES, DIM, K = 5_000, 768, 5


def _n_keys(device: str, quick: bool) -> int:
    return 20_000 if quick else (500_000 if device == "cuda" else 100_000)


def _torch_topk(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    out = [torch.topk(queries[i : i + chunk] @ keys.T, k, dim=1).indices for i in range(0, len(queries), chunk)]
    return torch.cat(out)


def _exact_search(device: str, n_keys: int) -> Result:
    dev = check_device(device)
    rng = np.random.default_rng(0)
    keys = normalized_float32(rng.standard_normal((n_keys, DIM), dtype=np.float32), "keys")
    queries = normalized_float32(rng.standard_normal((N_QUERIES, DIM), dtype=np.float32), "queries")
    index = ReferenceIndex(DIM, "flat", device=device)
    index.add(keys, np.arange(n_keys).astype(str))
    ours = best_time(lambda: index.search(queries, K), repeat=2)
    t_keys, t_queries = torch.from_numpy(keys).to(dev), torch.from_numpy(queries).to(dev)

    def torch_search() -> torch.Tensor:
        top = _torch_topk(t_queries, t_keys, K)
        sync(dev)
        return top

    base = best_time(torch_search, repeat=2)
    agree = float((index.search(queries[:500], 1)[1][:, 0] == torch_search()[:500, 0].cpu().numpy()).mean())
    return Result.timed(
        "exact search",
        f"{N_QUERIES:,} queries x {n_keys:,} keys x {DIM}-d random unit vectors, top-{K}, {device}",
        N_QUERIES,
        ours,
        base,
        "queries/s",
        goal=1 / 1.5,
        note=f"ReferenceIndex flat; baseline: chunked torch matmul + topk ({torch.get_num_threads()} threads); "
        f"{2 * N_QUERIES * n_keys * DIM / ours / 1e9:.0f} GFLOP/s; top-1 agreement {agree:.3f}",
    )


def run(device: str, quick: bool) -> list[Result]:
    n_keys = _n_keys(device, quick)
    return [_exact_search(device, n_keys)]
