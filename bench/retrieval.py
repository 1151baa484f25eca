"""Retrieval search speed: exact top-5 through ``ReferenceIndex`` (FAISS flat) vs a chunked
torch matmul + topk on the same vectors, and approximate search (IVF) against exact.

Exact search runs on isotropic random unit vectors; approximate search on clustered unit
vectors (keys and queries drawn around shared centres, as embeddings gather by species),
since on isotropic data every key is about equally far and no index can prune. The CPU
default is 100k keys (the full 500k x 5k x 768 d is ~4 TFLOP: minutes per pass on 2 cores);
``--device cuda`` runs the full size.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bench.common import Result, best_time
from bench.compute import check_device, sync
from clibd.index.faiss_index import ReferenceIndex, normalized_float32

N_QUERIES, DIM, K = 5_000, 768, 5
PER_CENTRE = 20  # keys per cluster centre (about a species' worth)
NOISE = 0.5  # norm of a vector's offset from its centre: cosine ~0.8 within a cluster


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


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    offsets = rng.standard_normal((n, centres.shape[1]), dtype=np.float32) * (NOISE / np.sqrt(centres.shape[1]))
    return normalized_float32(centres[rng.integers(0, len(centres), n)] + offsets, "vectors")


def _approximate_search(device: str, n_keys: int) -> Result:
    rng = np.random.default_rng(1)
    centres = normalized_float32(rng.standard_normal((n_keys // PER_CENTRE, DIM), dtype=np.float32), "centres")
    keys, queries = clustered(rng, n_keys, centres), clustered(rng, N_QUERIES, centres)
    ids = np.arange(n_keys).astype(str)
    exact = ReferenceIndex(DIM, "flat", device=device)
    exact.add(keys, ids)
    exact_time = best_time(lambda: exact.search(queries, K), repeat=2)
    truth = exact.search(queries, 1)[1][:, 0]
    nlist = int(np.sqrt(n_keys))  # sqrt(N): k-means training stays seconds on 2 cores
    ivf = ReferenceIndex(DIM, "ivf", device=device, nlist=nlist)
    ivf.add(keys, ids)
    # The fewest lists per query that reach recall@1 >= 0.99 (nprobe is a search-time knob).
    for nprobe in (1, 2, 4, 8, 16, 32, 64):
        ivf.nprobe = nprobe
        recall = float((ivf.search(queries, 1)[1][:, 0] == truth).mean())
        if recall >= 0.99:
            break
    ivf_time = best_time(lambda: ivf.search(queries, K), repeat=2)
    result = Result.timed(
        "approximate search (IVF)",
        f"{N_QUERIES:,} queries x {n_keys:,} keys x {DIM}-d clustered unit vectors"
        f" ({PER_CENTRE} keys/centre), top-{K}, {device}",
        N_QUERIES,
        ivf_time,
        exact_time,
        "queries/s",
        goal=10.0,
        note=f"IVF{nlist},Flat nprobe {nprobe}: recall@1 vs exact {recall:.4f} (goal >= 0.99; ratio 0 when missed);"
        f" baseline: flat ReferenceIndex",
    )
    return result if recall >= 0.99 else dataclasses.replace(result, ratio=0.0)


def run(device: str, quick: bool) -> list[Result]:
    n_keys = _n_keys(device, quick)
    return [_exact_search(device, n_keys), _approximate_search(device, n_keys)]
