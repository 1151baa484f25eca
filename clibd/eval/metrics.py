"""Vectorised top-k retrieval accuracy per rank (micro and macro), and the harmonic mean.

Definition (the published CLIBD evaluation, ``bioscanclip/util/util.py``
``top_k_micro_accuracy`` / ``top_k_macro_accuracy``): a query is correct at top-k for a
rank when its label is *among the labels of its k nearest keys* (not a majority vote).

- micro: correct queries / queries, at each rank;
- macro: the mean, over the classes present among the queries, of each class's accuracy;
- a query whose label at a rank is unknown (``-1``) is left out at that rank (the
  published code counted the empty label as a class of its own, ``not_classified``:
  ``eval.unlabelled: class`` codes it so before it gets here, ``clibd.eval.retrieval``);
- a class absent from the keys is simply never found: its queries count as wrong;
- neighbour order is taken as given: ties in similarity are broken by the search
  (``clibd.eval.retrieval`` passes them in FAISS's flat-index order, as the published code took them);
- a rank with no labelled query gets NaN.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from clibd.taxonomy import EVAL_RANKS


def _match_bits(query_labels: np.ndarray, neighbour_labels: np.ndarray, ks: Sequence[int]) -> tuple[np.ndarray, dict]:
    """``[Q, R]`` unsigned ints whose bit ``K-1-i`` is set when neighbour ``i`` carries the query's label
    (``K = max(ks)``), and per k the threshold: correct at top-k <=> value >= ``2**(K-k)``.

    One weighted sum over the neighbour axis replaces an any/argmax per k (3x faster).
    """
    query_labels = np.asarray(query_labels)
    neighbour_labels = np.asarray(neighbour_labels)
    if query_labels.ndim != 2 or neighbour_labels.ndim != 3:
        raise ValueError(
            f"need query_labels [Q,R] and neighbour_labels [Q,K,R],"
            f" got {query_labels.shape} and {neighbour_labels.shape}"
        )
    q, r = query_labels.shape
    if neighbour_labels.shape[0] != q or neighbour_labels.shape[2] != r:
        raise ValueError(f"neighbour_labels {neighbour_labels.shape} does not match query_labels {query_labels.shape}")
    depth = max(ks, default=0)
    if not ks or min(ks) < 1 or depth > min(neighbour_labels.shape[1], 63):
        raise ValueError(f"ks {list(ks)} must lie in 1..{min(neighbour_labels.shape[1], 63)} (neighbours searched)")
    dtype = np.min_scalar_type(2**depth - 1)
    match = (neighbour_labels[:, :depth] == query_labels[:, None, :]).astype(dtype)
    weights = np.array([1 << (depth - 1 - i) for i in range(depth)], dtype=dtype)
    return np.einsum("qkr,k->qr", match, weights), {k: dtype.type(1 << (depth - k)) for k in ks}


def topk_accuracy(
    query_labels: np.ndarray,
    neighbour_labels: np.ndarray,
    ks: Sequence[int] = (1, 3, 5),
    ranks: Sequence[str] = EVAL_RANKS,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{"micro"|"macro": {rank: {"top1": x, ...}}}`` with x in [0, 1] (NaN: no labelled query).

    ``query_labels`` ``[Q, R]`` int codes (``-1`` unknown); ``neighbour_labels`` ``[Q, K, R]``
    the codes of each query's K nearest keys, nearest first, coded with the same codes.
    """
    if len(ranks) != np.shape(query_labels)[1]:
        raise ValueError(f"{len(ranks)} rank names for {np.shape(query_labels)[1]} label columns")
    bits, threshold = _match_bits(query_labels, neighbour_labels, ks)
    query_labels = np.asarray(query_labels)
    out: dict[str, dict[str, dict[str, float]]] = {"micro": {}, "macro": {}}
    for j, rank in enumerate(ranks):
        known = query_labels[:, j] >= 0
        codes, found = query_labels[known, j], bits[known, j]
        per_class_n = np.bincount(codes)
        present = per_class_n > 0
        micro, macro = {}, {}
        for k in ks:
            hit = found >= threshold[k]
            if not len(codes):
                micro[f"top{k}"] = macro[f"top{k}"] = float("nan")
                continue
            micro[f"top{k}"] = float(hit.mean())
            per_class_hits = np.bincount(codes, weights=hit, minlength=len(per_class_n))
            macro[f"top{k}"] = float((per_class_hits[present] / per_class_n[present]).mean())
        out["micro"][rank], out["macro"][rank] = micro, macro
    return out


def per_class_accuracy(
    query_labels: np.ndarray,
    neighbour_labels: np.ndarray,
    ks: Sequence[int] = (1, 3, 5),
    ranks: Sequence[str] = EVAL_RANKS,
    class_names: dict[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """One row per (rank, class present among the queries): ``rank, code, class, n_queries, top1, ...``.

    ``class_names[rank][code]`` names a class; without it ``class`` repeats the code.
    """
    bits, threshold = _match_bits(query_labels, neighbour_labels, ks)
    query_labels = np.asarray(query_labels)
    tables = []
    for j, rank in enumerate(ranks):
        known = query_labels[:, j] >= 0
        codes, found = query_labels[known, j], bits[known, j]
        n = np.bincount(codes)
        present = np.flatnonzero(n)
        names = np.asarray(class_names[rank], dtype=object)[present] if class_names else present
        columns = {"rank": rank, "code": present, "class": names, "n_queries": n[present]}
        for k in ks:
            columns[f"top{k}"] = (
                np.bincount(codes, weights=found >= threshold[k], minlength=len(n))[present] / n[present]
            )
        tables.append(pd.DataFrame(columns))
    return pd.concat(tables, ignore_index=True)


def harmonic_mean(seen: float, unseen: float) -> float:
    """``2 / (1/seen + 1/unseen)``; 0 when either is 0, NaN when either is NaN."""
    if np.isnan(seen) or np.isnan(unseen):
        return float("nan")
    if seen <= 0 or unseen <= 0:
        return 0.0
    return 2.0 / (1.0 / seen + 1.0 / unseen)
