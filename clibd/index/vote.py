"""Taxonomic prediction from the k nearest reference specimens, and the new-species threshold.

Vote (per query, per rank): each of the k nearest keys votes for its label at that rank
with weight ``max(similarity, 1e-6)`` (so a negative cosine never counts against a label).
Keys with the rank unknown do not vote. The label with the largest summed weight wins;
ties go to the label of the nearer key. ``<rank>_vote_share`` is the winner's weight over
the weight of all voting keys; ``<rank>_similarity`` is the best similarity among the keys
carrying the winning label. A rank that no neighbour knows is predicted ``<NA>``.

``possible_new_species`` is ``best_similarity < threshold``, the threshold calibrated by
:func:`calibrate_threshold` on validation queries of seen and unseen species.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from clibd.taxonomy import EVAL_RANKS

_MIN_WEIGHT = 1e-6


def weighted_vote(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``scores``, ``labels`` ``[Q, k]`` (labels ``-1`` = unknown; neighbours sorted nearest first).

    Returns the winning label ``[Q]`` (``-1`` where no neighbour is labelled), its vote share
    and the best similarity among its keys (both NaN where no winner).
    """
    known = labels >= 0
    weights = np.where(known, np.maximum(scores, _MIN_WEIGHT), 0.0)
    same = labels[:, :, None] == labels[:, None, :]
    support = np.where(known, (same * weights[:, None, :]).sum(axis=2), -1.0)
    winner_pos = support.argmax(axis=1)  # first maximum = nearest key among tied labels
    rows = np.arange(len(labels))
    winner = np.where(known.any(axis=1), labels[rows, winner_pos], -1)
    total = weights.sum(axis=1)
    has = winner >= 0
    share = np.where(has, support[rows, winner_pos] / np.where(has, total, 1.0), np.nan)
    best = np.where(labels == winner[:, None], scores, -np.inf).max(axis=1)
    return winner, share, np.where(has, best, np.nan)


def predict_taxonomy(
    scores: np.ndarray,
    positions: np.ndarray,
    key_taxonomy: pd.DataFrame,
    key_ids: Sequence[str],
    query_ids: Sequence[str],
    threshold: float | np.ndarray,
    ranks: Sequence[str] = EVAL_RANKS,
) -> pd.DataFrame:
    """One row per query: id, per rank the label / similarity / vote share, the nearest key,
    ``best_similarity`` and ``possible_new_species``. ``positions`` may hold ``-1`` (FAISS
    pads with it when the index has fewer than k keys); such slots do not vote. ``threshold``:
    one for all queries, or one per query (queries of different evidence)."""
    if scores.shape != positions.shape or len(scores) != len(query_ids):
        raise ValueError(
            f"scores {scores.shape}, positions {positions.shape} and {len(query_ids)} query ids do not match"
        )
    if scores.shape[1] == 0:
        raise ValueError("need at least one neighbour per query (k >= 1)")
    valid = positions >= 0
    safe = np.where(valid, positions, 0)
    out: dict[str, object] = {"id": pd.array(list(query_ids), dtype="string")}
    for rank in ranks:
        codes, names = pd.factorize(key_taxonomy[rank].reset_index(drop=True))
        winner, share, best = weighted_vote(scores, np.where(valid, codes[safe], -1))
        label = np.full(len(winner), None, dtype=object)
        label[winner >= 0] = np.asarray(names, dtype=object)[winner[winner >= 0]]
        out[rank] = pd.array(label, dtype="string")
        out[f"{rank}_similarity"] = best
        out[f"{rank}_vote_share"] = share
    best_similarity = np.where(valid[:, 0], scores[:, 0], np.nan)
    nearest = np.full(len(scores), None, dtype=object)
    nearest[valid[:, 0]] = np.asarray(key_ids)[positions[valid[:, 0], 0]]  # no str object per key: 5 M keys
    out["nearest_id"] = pd.array(nearest, dtype="string")
    out["best_similarity"] = best_similarity
    out["possible_new_species"] = ~(best_similarity >= threshold)
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Calibration:
    """The threshold and how well it separated the validation queries."""

    threshold: float
    balanced_accuracy: float
    seen_kept: float  # fraction of seen-species queries with best similarity >= threshold
    unseen_flagged: float  # fraction of unseen-species queries below it
    n_seen: int
    n_unseen: int

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_threshold(seen_best: np.ndarray, unseen_best: np.ndarray) -> Calibration:
    """Threshold on the best-match similarity maximising balanced accuracy of seen vs unseen.

    Candidates are the midpoints between consecutive distinct scores (plus one below and
    one above all of them); a query is called seen when its score is ``>= threshold``.
    Among equally good thresholds the lowest is taken (fewest false new-species flags).
    """
    seen_best = np.asarray(seen_best, dtype=np.float64)
    unseen_best = np.asarray(unseen_best, dtype=np.float64)
    if len(seen_best) == 0 or len(unseen_best) == 0:
        raise ValueError(
            f"threshold calibration needs seen and unseen validation queries, got "
            f"{len(seen_best)} seen and {len(unseen_best)} unseen"
        )
    values = np.unique(np.concatenate([seen_best, unseen_best]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    seen_sorted, unseen_sorted = np.sort(seen_best), np.sort(unseen_best)
    seen_kept = 1.0 - np.searchsorted(seen_sorted, candidates, side="left") / len(seen_sorted)
    unseen_flagged = np.searchsorted(unseen_sorted, candidates, side="left") / len(unseen_sorted)
    balanced = (seen_kept + unseen_flagged) / 2
    i = int(balanced.argmax())
    return Calibration(
        threshold=float(candidates[i]),
        balanced_accuracy=float(balanced[i]),
        seen_kept=float(seen_kept[i]),
        unseen_flagged=float(unseen_flagged[i]),
        n_seen=len(seen_best),
        n_unseen=len(unseen_best),
    )
