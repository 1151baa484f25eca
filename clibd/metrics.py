"""Vectorised top-k retrieval accuracy per rank (micro and macro), and the harmonic mean.

Definition (the published CLIBD evaluation, ``bioscanclip/util/util.py``
``top_k_micro_accuracy`` / ``top_k_macro_accuracy``): a query is correct at top-k for a
rank when its label is *among the labels of its k nearest keys* (not a majority vote).

- micro: correct queries / queries, at each rank;
- macro: the mean, over the classes present among the queries, of each class's accuracy;
- a query whose label at a rank is unknown (``-1``) is left out at that rank (the
  published code counted the empty label as a class of its own);
- a class absent from the keys is simply never found: its queries count as wrong;
- neighbour order is taken as given: ties in similarity are broken by the search
  (``ReferenceIndex.search`` puts the earlier-added key first);
- a rank with no labelled query gets NaN.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from clibd.taxonomy import EVAL_RANKS


def _hits(query_labels: np.ndarray, neighbour_labels: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """``[len(ks), Q, R]`` bool: query's label among its first k neighbours' labels."""
    query_labels = np.asarray(query_labels)
    neighbour_labels = np.asarray(neighbour_labels)
    if query_labels.ndim != 2 or neighbour_labels.ndim != 3:
        raise ValueError(
            f"need query_labels [Q,R] and neighbour_labels [Q,K,R], got {query_labels.shape} and {neighbour_labels.shape}"
        )
    q, r = query_labels.shape
    if neighbour_labels.shape[0] != q or neighbour_labels.shape[2] != r:
        raise ValueError(f"neighbour_labels {neighbour_labels.shape} does not match query_labels {query_labels.shape}")
    if not ks or min(ks) < 1 or max(ks) > neighbour_labels.shape[1]:
        raise ValueError(f"ks {list(ks)} must lie in 1..{neighbour_labels.shape[1]} (neighbours searched)")
    match = neighbour_labels == query_labels[:, None, :]
    found_by = np.logical_or.accumulate(match, axis=1)  # [Q, K, R]: found within the first j+1
    return found_by[:, np.asarray(ks) - 1, :].transpose(1, 0, 2)


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
    hits = _hits(query_labels, neighbour_labels, ks)
    query_labels = np.asarray(query_labels)
    out: dict[str, dict[str, dict[str, float]]] = {"micro": {}, "macro": {}}
    for j, rank in enumerate(ranks):
        known = query_labels[:, j] >= 0
        codes = query_labels[known, j]
        per_class_n = np.bincount(codes)
        present = per_class_n > 0
        micro, macro = {}, {}
        for i, k in enumerate(ks):
            hit = hits[i, known, j]
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
    hits = _hits(query_labels, neighbour_labels, ks)
    query_labels = np.asarray(query_labels)
    tables = []
    for j, rank in enumerate(ranks):
        known = query_labels[:, j] >= 0
        codes = query_labels[known, j]
        n = np.bincount(codes)
        present = np.flatnonzero(n)
        names = np.asarray(class_names[rank], dtype=object)[present] if class_names else present
        columns = {"rank": rank, "code": present, "class": names, "n_queries": n[present]}
        for i, k in enumerate(ks):
            columns[f"top{k}"] = np.bincount(codes, weights=hits[i, known, j], minlength=len(n))[present] / n[present]
        tables.append(pd.DataFrame(columns))
    return pd.concat(tables, ignore_index=True)


def harmonic_mean(seen: float, unseen: float) -> float:
    """``2 / (1/seen + 1/unseen)``; 0 when either is 0, NaN when either is NaN."""
    if np.isnan(seen) or np.isnan(unseen):
        return float("nan")
    if seen <= 0 or unseen <= 0:
        return 0.0
    return 2.0 / (1.0 / seen + 1.0 / unseen)
