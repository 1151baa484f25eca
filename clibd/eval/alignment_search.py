"""1-NN of barcodes by alignment identity, the way a barcoder identifies a read (BOLD's engine, BLAST).

A k-mer prefilter keeps each query's ``candidates`` keys of highest 8-mer count cosine (all keys
when ``candidates`` is None), in that order; each is aligned to the query
(``clibd.data.alignment.percent_identity``: parasail semi-global, end gaps free on both reads, at
least 100 aligned columns) and the nearest key is the candidate of highest % identity.

Ties: the first candidate in prefilter order wins, i.e. of equally identical keys the one of
higher k-mer cosine (then the lower key position). A query that no candidate overlaps by 100
columns gets its k-mer nearest key; ``unaligned`` counts them.

Each parasail call runs in C without the GIL, so ``threads`` worker threads share the queries.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from clibd.data.alignment import percent_identity
from clibd.eval.dna_benchmark import kmer_count_vectors

PREFILTER_K = 8
_QUERY_CHUNK = 1024  # rows of the dense [queries, keys] cosine block held at once


class AlignmentHits(NamedTuple):
    key: np.ndarray  # int64 [queries]: position in ``keys`` of each query's nearest key
    identity: np.ndarray  # float64 [queries]: its % identity (NaN where no candidate aligned)
    unaligned: int  # queries no candidate overlapped by the minimum columns (k-mer nearest key used)


def kmer_vectors(barcodes: Sequence[str]) -> sp.csr_matrix:
    """L2-normalised k-mer-8 count vectors ``[n, 4^8]`` (the prefilter's space)."""
    return normalize(kmer_count_vectors(list(barcodes), PREFILTER_K))


def nearest_by_kmer(
    query_vectors: sp.csr_matrix, key_vectors_t: sp.csc_matrix, candidates: Optional[int]
) -> np.ndarray:
    """``[queries, n]`` key positions in decreasing cosine of :func:`kmer_vectors` (ties: lower position
    first); ``key_vectors_t``: the keys' vectors transposed, built once per set of keys."""
    n_keys = key_vectors_t.shape[1]
    n = n_keys if candidates is None else min(candidates, n_keys)
    out = np.empty((query_vectors.shape[0], n), dtype=np.int64)
    for start in range(0, query_vectors.shape[0], _QUERY_CHUNK):
        cosine = (query_vectors[start : start + _QUERY_CHUNK] @ key_vectors_t).toarray()
        # A stable sort of the negated cosine keeps equal cosines in key order.
        out[start : start + _QUERY_CHUNK] = np.argsort(-cosine, axis=1, kind="stable")[:, :n]
    return out


def prefilter(queries: Sequence[str], keys: Sequence[str], candidates: Optional[int]) -> np.ndarray:
    """``[queries, n]`` key positions in decreasing k-mer-8 cosine (ties: lower position first)."""
    return nearest_by_kmer(kmer_vectors(queries), kmer_vectors(keys).T.tocsc(), candidates)


def best_identity(queries: Sequence[str], keys: Sequence[str], order: np.ndarray, threads: int = 1) -> AlignmentHits:
    """Each query's key of highest % identity among its candidates ``order`` ``[queries, n]`` (positions
    in ``keys``, in prefilter order, which breaks ties)."""

    def best(row: int) -> tuple[int, float]:
        identity = percent_identity(queries[row], [keys[i] for i in order[row]]).identity
        if np.isnan(identity).all():
            return int(order[row, 0]), float("nan")
        pick = int(np.nanargmax(identity))  # the first maximum: prefilter order breaks ties
        return int(order[row, pick]), float(identity[pick])

    with ThreadPoolExecutor(max(1, threads)) as pool:
        picks = list(pool.map(best, range(len(queries))))
    key = np.fromiter((p[0] for p in picks), dtype=np.int64, count=len(picks))
    identity = np.fromiter((p[1] for p in picks), dtype=np.float64, count=len(picks))
    return AlignmentHits(key, identity, int(np.isnan(identity).sum()))


def alignment_nearest(
    queries: Sequence[str], keys: Sequence[str], candidates: Optional[int] = 50, threads: int = 1
) -> AlignmentHits:
    """Each query's key of highest % identity among its ``candidates`` k-mer nearest keys."""
    return best_identity(queries, keys, prefilter(queries, keys, candidates), threads)
