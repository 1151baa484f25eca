"""The barcoder's answer: % identity of DNA hits, and the re-rank of candidates by it.

Every DNA hit gets the % identity and overlap of the query aligned to the hit's barcode
(``clibd.data.alignment.percent_identity``: parasail semi-global, end gaps free, at least 100
aligned columns, else NaN), beside the cosine similarity of the embedding search.

Re-rank (``clibd classify --rerank identity``, :func:`rerank_by_identity`): the embedding search
returns each query's ``candidates`` nearest keys; those it cannot tell apart from the nearest,
within ``margin`` of its cosine similarity, are re-ranked by % identity. Identity is measured
species by species: the nearest candidate of each species in the margin (its representative;
a key without a species name is its own) is aligned, and the species are ordered by it (ties,
and keys no aligned read overlaps: in cosine order). A species' other candidates follow its
representative in cosine order; candidates beyond the margin follow all of them. So the work
is one alignment per species the embedding finds close, not one per key: a library with
hundreds of specimens of a species aligns one of them.

Why the margin and the grouping (shared 4k file, bench protocol, the recipe's fitted table):
re-ranking the 10 nearest keys by identity beat alignment 1-NN (a k-mer-8 prefilter of 50 keys,
each aligned) on every column, at 10 alignments a query; a margin of 0.1 with one
representative per species gave the same figures at 1.1 (seen species) to 4.2 (unseen) alignments
a query. ``bench/rerank.py`` measures it (docs/identify.md has the table).
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
    identity: HitIdentity  # [n, candidates]: measured for the aligned representatives, NaN elsewhere
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
    # leader[j]: the first candidate in the margin of j's species, at or before j (j itself if it is the first).
    same = group[:, :, None] == group[:, None, :]  # [n, j, i]
    not_after = np.tril(np.ones((c, c), dtype=bool))  # [j, i]: i <= j
    leader = np.argmax(same & window[:, None, :] & not_after, axis=2)
    representative = window & (leader == np.arange(c))
    wanted = np.where(representative, positions, -1)
    measured = hit_identity(queries, wanted, barcodes, threads=rerank.threads)
    # Sort key per candidate: its group representative's identity (window only), then the representative's
    # rank (keeps a species together, ties in cosine order), then its own rank.
    rep_identity = np.take_along_axis(measured.identity, leader, axis=1)
    primary = np.where(window, np.nan_to_num(rep_identity, nan=-1.0), -np.inf)
    secondary = np.where(window, leader, np.arange(c))
    order = np.lexsort((np.broadcast_to(np.arange(c), (n, c)), secondary, -primary), axis=1)
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    identity = HitIdentity(take(measured.identity), take(measured.overlap))
    return Reranked(take(scores), take(positions), identity, int(representative.sum()))


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
