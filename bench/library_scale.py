"""Reference libraries at scale: per index kind (clibd.index.faiss_index, parameters chosen
from the key count), memory, build time, query latency and throughput, and recall@1 against
exact search, on synthetic clustered unit vectors of low intrinsic dimension (a 64-d latent
with species clusters, mapped into ``dim`` with a little isotropic noise, as real embeddings
are). Baseline: the exact flat index in the same run. docs/scale.md extrapolates the rows
to 5 M and 50 M keys.

``make bench`` runs 10 000 keys x 128 (``--quick``: 2 000 x 64), which the shared 2-core box
allows; ``python bench/library_scale.py --keys 1000000 --dim 768`` is the full-size run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import Result  # noqa: E402
from bench.run import print_table  # noqa: E402
from clibd.index.faiss_index import KINDS, ReferenceIndex  # noqa: E402

LATENT, QUERIES, LATENCY_QUERIES = 64, 500, 20


def clustered(keys: int, queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, LATENT)))[0].T.astype(np.float32)
    centres = rng.standard_normal((max(2, keys // 50), LATENT)).astype(np.float32)  # ~50 keys per species

    def draw(n: int) -> np.ndarray:
        z = centres[rng.integers(len(centres), size=n)] + 0.35 * rng.standard_normal((n, LATENT), dtype=np.float32)
        return z @ basis + 0.02 * rng.standard_normal((n, dim), dtype=np.float32)

    return draw(keys), draw(queries)


def measure(kind: str, keys: np.ndarray, queries: np.ndarray, truth: np.ndarray | None) -> dict:
    ids = np.arange(len(keys)).astype(str)
    start = time.perf_counter()
    index = ReferenceIndex(keys.shape[1], kind, device="cpu")
    index.add(keys, ids)
    build = time.perf_counter() - start
    start = time.perf_counter()
    _, got = index.search(queries, 1)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    for q in queries[:LATENCY_QUERIES]:
        index.search(q[None], 1)
    latency = (time.perf_counter() - start) / LATENCY_QUERIES
    return {
        "bytes": faiss.serialize_index(index._index).nbytes,
        "build_s": build,
        "qps": len(queries) / batch_s,
        "latency_ms": latency * 1e3,
        "positions": got[:, 0],
        "recall": 1.0 if truth is None else float((got[:, 0] == truth).mean()),
        "params": f"nlist={index.nlist} nprobe={index.nprobe} pq_m={index.pq_m} pq_nbits={index.pq_nbits}",
    }


def run(device: str, quick: bool, keys: int = 0, dim: int = 0) -> list[Result]:
    del device  # CPU: the GPU search is in bench/gpu_check.py
    keys, dim = keys or (2_000 if quick else 10_000), dim or (64 if quick else 128)
    key_emb, queries = clustered(keys, QUERIES, dim)
    flat = measure("flat", key_emb, queries, None)
    results = []
    for kind in KINDS[1:]:
        m = measure(kind, key_emb, queries, flat["positions"])
        workload = f"{keys:,} keys x {dim}, {QUERIES} queries, {m['params'] if kind != 'hnsw' else 'M=32 ef=128'}"
        note = (f"recall@1 {m['recall']:.3f}; build {m['build_s']:.1f} s (flat {flat['build_s']:.1f}); "
                f"latency {m['latency_ms']:.2f} ms/query (flat {flat['latency_ms']:.2f})")  # fmt: skip
        results.append(Result(f"library {kind}: memory", workload, m["bytes"] / keys, flat["bytes"] / keys,
                              "bytes/key", flat["bytes"] / m["bytes"], None, note))  # fmt: skip
        results.append(Result(f"library {kind}: throughput", workload, m["qps"], flat["qps"], "queries/s",
                              m["qps"] / flat["qps"], None, note))  # fmt: skip
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    print_table(run("cpu", False, args.keys, args.dim))
