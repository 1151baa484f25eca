"""The barcoder's answer: % identity of DNA hits, and the re-rank of candidates by it.

Every DNA hit gets the % identity and overlap of the query aligned to the hit's barcode
(``clibd.data.alignment.percent_identity``: parasail semi-global, end gaps free, at least 100
aligned columns, else NaN), beside the cosine similarity of the embedding search.

Re-rank (``clibd classify --rerank identity``, :func:`rerank_by_identity`): the embedding search
returns each query's ``candidates`` nearest keys; those it cannot tell apart from the nearest,
within ``margin`` of its cosine similarity, are each aligned and re-ranked: species by the best
identity among their candidates in the margin (a key without a species name is its own), then
within a species by identity (ties, and keys no aligned read overlaps: in cosine order).
Candidates beyond the margin follow all of them in cosine order. So the work is at most
``candidates`` alignments a query (3.7 on average on the shared 4k file), never one per key of a
large library.

Why every candidate in the margin and not only each species' nearest (shared 4k file, bench
protocol, the recipe's table fitted on the seen keys, 10 candidates, margin 0.1): aligning one
representative per species (2.3 alignments a query) gave seen species 0.9858, below alignment
1-NN's 0.9873: a species' nearest key by cosine is not always its closest barcode. Aligning each
candidate in the margin (3.7 a query) gives 0.9873 / 0.8653 / 0.9402 (seen species / unseen genus /
unseen family) against alignment 1-NN's 0.9873 / 0.8404 / 0.9081 (a k-mer-8 prefilter of 50 keys,
each aligned). ``bench/rerank.py`` measures it (docs/identify.md has the table).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from clibd.data.alignment import percent_identity
from clibd.index.key_barcodes import KeyBarcodes

CANDIDATES = 10  # keys the embedding search hands to the re-rank
MARGIN = 0.1  # cosine below the nearest within which candidates are re-ranked


class HitIdentity(NamedTuple):
    identity: np.ndarray  # float64 [n, k]: % identity of each hit; NaN: not aligned, no barcode, overlap < 100
    overlap: np.ndarray  # int64 [n, k]: aligned columns (0 where not aligned)


def _align(queries: Sequence[str | None], references: list[list[str | None]], threads: int) -> list[HitIdentity]:
    """Per query, the identity and overlap against its own list of references (None: skipped)."""

    def one(i: int) -> HitIdentity:
        refs = references[i]
        identity, overlap = np.full(len(refs), np.nan), np.zeros(len(refs), dtype=np.int64)
        present = [j for j, r in enumerate(refs) if r is not None]
        if queries[i] is not None and present:
            result = percent_identity(queries[i], [refs[j] for j in present])
            identity[present], overlap[present] = result.identity, result.overlap
        return HitIdentity(identity, overlap)

    if threads <= 1:
        return [one(i) for i in range(len(queries))]
    with ThreadPoolExecutor(threads) as pool:  # parasail runs in C through ctypes, without the GIL
        return list(pool.map(one, range(len(queries))))


def hit_identity(
    queries: Sequence[str | None],
    positions: np.ndarray,
    barcodes: KeyBarcodes,
    known: HitIdentity | None = None,
    threads: int = 1,
) -> HitIdentity:
    """Identity of each query (oriented barcode; None: no barcode) against the keys at ``positions``
    ``[n, k]`` (``-1``: none). Pairs ``known`` already holds (not NaN) are not aligned again."""
    positions = np.asarray(positions, dtype=np.int64)
    todo = positions >= 0
    if known is not None:
        todo &= np.isnan(known.identity)
    wanted = np.where(todo, positions, -1)
    references = np.array(barcodes.take(wanted), dtype=object).reshape(positions.shape).tolist()
    rows = _align(list(queries), references, threads)
    identity = np.stack([r.identity for r in rows]) if rows else np.zeros(positions.shape)
    overlap = np.stack([r.overlap for r in rows]) if rows else np.zeros(positions.shape, dtype=np.int64)
    if known is not None:
        identity = np.where(todo, identity, known.identity)
        overlap = np.where(todo, overlap, known.overlap)
    return HitIdentity(identity, overlap)


@dataclass(frozen=True)
class Rerank:
    """The re-rank's settings and the library's species codes (its groups), built once per library."""

    groups: np.ndarray  # int64 [keys]: species code of each key, -1 where it has none
    candidates: int = CANDIDATES
    margin: float = MARGIN
    threads: int = 1

    @classmethod
    def for_library(cls, species: pd.Series, candidates: int = CANDIDATES, margin: float = MARGIN, threads: int = 1):
        if candidates < 1:
            raise ValueError(f"the re-rank needs at least 1 candidate, got {candidates}")
        if margin < 0:
            raise ValueError(f"the re-rank margin must be >= 0, got {margin}")
        return cls(pd.factorize(species)[0].astype(np.int64), candidates, margin, threads)


class Reranked(NamedTuple):
    scores: np.ndarray  # [n, candidates] cosine similarity, in the new order
    positions: np.ndarray  # [n, candidates] key positions, in the new order
    identity: HitIdentity  # [n, candidates]: measured for the candidates in the margin, NaN elsewhere
    aligned: int  # alignments made


def rerank_by_identity(
    queries: Sequence[str | None], scores: np.ndarray, positions: np.ndarray, barcodes: KeyBarcodes, rerank: Rerank
) -> Reranked:
    """Re-order each row of the embedding search's candidates (``scores``, ``positions`` ``[n, c]``,
    nearest first) by % identity (module docstring)."""
    n, c = positions.shape
    valid = positions >= 0
    window = valid & (scores >= scores[:, :1] - rerank.margin)
    group = np.where(valid, rerank.groups[np.where(valid, positions, 0)], -1)
    group = np.where(group >= 0, group, -2 - np.arange(c))  # a key without a species is a group of its own
    measured = hit_identity(queries, np.where(window, positions, -1), barcodes, threads=rerank.threads)
    own = np.where(window, np.nan_to_num(measured.identity, nan=-1.0), -np.inf)
    # Each candidate's species' best identity in the window: [n, j] = max over i of the same group.
    same = group[:, :, None] == group[:, None, :]
    best = np.max(np.where(same & window[:, None, :], own[:, None, :], -np.inf), axis=2)
    primary = np.where(window, best, -np.inf)
    # Sort keys: the species' best identity; the species' first candidate in the window (keeps a species
    # together when two tie; beyond the window, the candidate's own rank); its own identity; cosine order.
    secondary = np.where(window, np.argmax(same & window[:, None, :], axis=2), np.arange(c))
    order = np.lexsort((np.broadcast_to(np.arange(c), (n, c)), -own, secondary, -primary), axis=1)
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    identity = HitIdentity(take(measured.identity), take(measured.overlap))
    return Reranked(take(scores), take(positions), identity, int(window.sum()))


class BarcodeHits(NamedTuple):
    scores: np.ndarray  # [n, W] cosine similarity of each row's candidates, in their final order
    positions: np.ndarray  # [n, W]
    identity: HitIdentity  # [n, k] of the first k; NaN / 0 for rows without a barcode
    reranked: np.ndarray  # bool [n]: the row's candidates were re-ranked by identity


def barcode_hits(
    queries: np.ndarray,
    scores: np.ndarray,
    positions: np.ndarray,
    k: int,
    barcodes: KeyBarcodes | None,
    rerank: Rerank | None,
) -> BarcodeHits:
    """Each row's candidates (``[n, W]``, nearest first, from its embedding search), the first
    ``rerank.candidates`` re-ranked by identity for rows with a barcode (``queries``: the oriented
    read, None: none) when ``rerank`` is given, and the identity of the first ``k`` of such rows
    (needs ``barcodes``)."""
    has = pd.notna(queries).astype(bool) & (barcodes is not None)
    scores, positions = scores.copy(), positions.copy()
    k = min(k, scores.shape[1])
    identity = HitIdentity(np.full((len(scores), k), np.nan), np.zeros((len(scores), k), dtype=np.int64))
    reranked = has & (rerank is not None)
    if reranked.any():
        c = min(rerank.candidates, scores.shape[1])
        found = rerank_by_identity(
            queries[reranked].tolist(), scores[reranked, :c], positions[reranked, :c], barcodes, rerank
        )
        scores[np.ix_(reranked, np.arange(c))], positions[np.ix_(reranked, np.arange(c))] = (
            found.scores,
            found.positions,
        )
        top = min(k, c)
        identity.identity[np.ix_(reranked, np.arange(top))] = found.identity.identity[:, :top]
        identity.overlap[np.ix_(reranked, np.arange(top))] = found.identity.overlap[:, :top]
    if has.any():
        known = HitIdentity(identity.identity[has], identity.overlap[has])
        threads = rerank.threads if rerank is not None else 1
        identity.identity[has], identity.overlap[has] = hit_identity(
            queries[has].tolist(), positions[has, :k], barcodes, known, threads
        )
    return BarcodeHits(scores, positions, identity, reranked)
