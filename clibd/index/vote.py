"""Taxonomic prediction from the nearest reference specimens, the new-species threshold, and
the deepest rank the prediction is sure of.

Vote (per query, per rank): each of the k nearest keys votes for its label at that rank
with weight ``max(similarity, 1e-6)`` (so a negative cosine never counts against a label).
Keys with the rank unknown do not vote. The label with the largest summed weight wins;
ties go to the label of the nearer key. ``<rank>_vote_share`` is the winner's weight over
the weight of all voting keys; ``<rank>_similarity`` is the best similarity among the voters
carrying the winning label (and ``<rank>_identity``, for DNA hits with % identity,
``clibd.index.identity``, their best identity). A rank that no neighbour knows is predicted ``<NA>``.

``<rank>_margin``: how much nearer the name is than any other name at that rank: the winner's
similarity minus that of the nearest key, among all the searched candidates (not only the k
voters), that carries another known name at that rank (when none does, the margin to the last
candidate, a lower bound). The nearest key usually carries the predicted name at every rank, so
the similarity is often one value at every rank; the margin is each rank's own: at species it is
the gap to the nearest other species, at order the gap to the nearest other order.

``possible_new_species`` is ``best_similarity < threshold``, the threshold calibrated by
:func:`calibrate_threshold` on validation queries of seen and unseen species.

The deepest confident rank (:func:`apply_rank_thresholds`): each rank has its own rule, a
threshold on one of its scores (similarity, margin, or identity after the re-rank), chosen and
calibrated on a hold-out to tell right predictions at that rank from wrong ones
(:func:`calibrate_rank`; ``clibd.index.calibration``). Going down from order, the prediction
stops at the first rank whose score is below its threshold: ``deepest_confident_rank`` names the
last rank that cleared it, and the ranks below it are withheld (``<NA>``, shown as uncertain;
their scores are kept). A possible new species is never named at species. A rank without a rule
is not judged: where a library has none (too small to calibrate), every name is shown and the
deepest confident rank is ``<NA>``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

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
    return winner, share, winner_best(scores, labels, winner)


def winner_best(values: np.ndarray, labels: np.ndarray, winner: np.ndarray) -> np.ndarray:
    """Per query, the largest of ``values`` ``[Q, k]`` over the keys labelled ``winner`` (NaN values
    left out; NaN where there are none)."""
    voted = (labels == winner[:, None]) & (winner[:, None] >= 0) & ~np.isnan(values)
    best = np.where(voted, values, -np.inf).max(axis=1)
    return np.where(voted.any(axis=1), best, np.nan)


def name_margin(scores: np.ndarray, labels: np.ndarray, winner: np.ndarray, best: np.ndarray) -> np.ndarray:
    """``best`` minus the similarity of the nearest candidate with another known label (module
    docstring); ``scores`` / ``labels`` ``[Q, W]`` over all candidates (``-inf`` score: none)."""
    other = (labels >= 0) & (labels != winner[:, None]) & np.isfinite(scores)
    runner_up = np.where(other, scores, -np.inf).max(axis=1)
    last = np.where(np.isfinite(scores), scores, np.inf).min(axis=1)
    return best - np.where(other.any(axis=1), runner_up, last)


def predict_taxonomy(
    scores: np.ndarray,
    positions: np.ndarray,
    key_taxonomy: pd.DataFrame,
    key_ids: Sequence[str],
    query_ids: Sequence[str],
    threshold: float | np.ndarray,
    ranks: Sequence[str] = EVAL_RANKS,
    identity: Optional[np.ndarray] = None,
    overlap: Optional[np.ndarray] = None,
    k: Optional[int] = None,
) -> pd.DataFrame:
    """One row per query: id, per rank the label / similarity / vote share / margin / identity, the
    nearest key, ``best_similarity``, its ``identity`` and ``overlap``, and ``possible_new_species``.

    ``scores`` / ``positions`` ``[Q, W]``: the searched candidates, nearest first; the first ``k``
    (default all) vote, all of them count for the margin. ``positions`` may hold ``-1`` (FAISS pads
    with it when the index has fewer keys); such slots do not vote. ``threshold``: one for all
    queries, or one per query (queries of different evidence); NaN: none calibrated (the flag is
    ``<NA>``). ``identity`` / ``overlap`` ``[Q, >= k]``: of each hit (``clibd.index.identity``; NaN / 0
    where not aligned); None: no hit has one."""
    if scores.shape != positions.shape or len(scores) != len(query_ids):
        raise ValueError(
            f"scores {scores.shape}, positions {positions.shape} and {len(query_ids)} query ids do not match"
        )
    k = scores.shape[1] if k is None else min(k, scores.shape[1])
    if k == 0:
        raise ValueError("need at least one neighbour per query (k >= 1)")
    identity = np.full((len(scores), k), np.nan) if identity is None else identity[:, :k]
    overlap = np.zeros((len(scores), k), dtype=np.int64) if overlap is None else overlap[:, :k]
    valid = positions >= 0
    safe = np.where(valid, positions, 0)
    wide = np.where(valid, scores, -np.inf)
    out: dict[str, object] = {"id": pd.array(list(query_ids), dtype="string")}
    for rank in ranks:
        codes, names = pd.factorize(key_taxonomy[rank].reset_index(drop=True))
        labels = np.where(valid, codes[safe], -1)
        winner, share, best = weighted_vote(scores[:, :k], labels[:, :k])
        label = np.full(len(winner), None, dtype=object)
        label[winner >= 0] = np.asarray(names, dtype=object)[winner[winner >= 0]]
        out[rank] = pd.array(label, dtype="string")
        out[f"{rank}_similarity"] = best
        out[f"{rank}_vote_share"] = share
        out[f"{rank}_margin"] = name_margin(wide, labels, winner, best)
        out[f"{rank}_identity"] = winner_best(identity, labels[:, :k], winner)
    best_similarity = np.where(valid[:, 0], scores[:, 0], np.nan)
    nearest = np.full(len(scores), None, dtype=object)
    nearest[valid[:, 0]] = np.asarray(key_ids)[positions[valid[:, 0], 0]]  # no str object per key: 5 M keys
    out["nearest_id"] = pd.array(nearest, dtype="string")
    out["best_similarity"] = best_similarity
    out["identity"] = identity[:, 0]
    out["overlap"] = pd.array(np.where(valid[:, 0] & (overlap[:, 0] > 0), overlap[:, 0], None), dtype="Int64")
    out["possible_new_species"] = new_species_flag(best_similarity, threshold)
    return pd.DataFrame(out)


def new_species_flag(score: np.ndarray, threshold: float | np.ndarray) -> pd.arrays.BooleanArray:
    """``score < threshold`` (a NaN score: flagged), ``<NA>`` where the threshold is NaN (none calibrated)."""
    threshold = np.broadcast_to(np.asarray(threshold, dtype=np.float64), np.shape(score))
    flag = ~(np.asarray(score) >= threshold)
    return pd.array(np.where(np.isnan(threshold), None, flag), dtype="boolean")


# A rank's rule as stored in a library: a threshold on one of its scores, or always / never confident
# (the hold-out made no wrong / no right prediction at that rank).
RULE_THRESHOLD, RULE_ALWAYS, RULE_NEVER = "threshold", "always", "never"
# The per-rank scores a rule may use, and what a missing value counts as (no neighbour, no overlap).
SCORE_FLOORS = {"similarity": -1.0, "margin": -2.0, "identity": 0.0}


def rule_value(rule: Optional[dict]) -> tuple[str, float]:
    """(the score a stored rank rule reads, its threshold): -inf always, +inf never, NaN no rule."""
    if rule is None:
        return "similarity", float("nan")
    value = {RULE_ALWAYS: -np.inf, RULE_NEVER: np.inf}.get(rule["rule"], rule.get("threshold", np.nan))
    return rule.get("score", "similarity"), float(value)


def apply_rank_thresholds(
    table: pd.DataFrame, scores: dict[str, np.ndarray], thresholds: dict[str, np.ndarray], ranks=EVAL_RANKS
) -> pd.DataFrame:
    """``deepest_confident_rank`` and the names below it withheld (module docstring). ``scores`` /
    ``thresholds``: per rank, one value per row (a NaN threshold: that rank is not judged, it passes;
    rows whose every threshold is NaN get ``<NA>`` and keep their names)."""
    table = table.copy()
    rows = len(table)
    threshold = np.stack([np.broadcast_to(thresholds[r], rows) for r in ranks], axis=1).astype(np.float64)
    score = np.stack([np.asarray(scores[r], dtype=np.float64) for r in ranks], axis=1)
    passed = np.isnan(threshold) | (score >= threshold)
    if "species" in ranks:  # a possible new species is never named
        passed[:, list(ranks).index("species")] &= ~table["possible_new_species"].fillna(False).to_numpy(bool)
    depth = np.cumprod(passed, axis=1).sum(axis=1)  # ranks cleared before the first failure
    judged = ~np.isnan(threshold).all(axis=1)
    deepest = np.where(judged & (depth > 0), np.asarray(ranks, dtype=object)[np.maximum(depth - 1, 0)], None)
    for j, rank in enumerate(ranks):
        table[rank] = table[rank].mask(judged & (j >= depth))
    table["deepest_confident_rank"] = pd.array(deepest, dtype="string")
    return table


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


def calibrate_rank(scores: dict[str, np.ndarray], correct: np.ndarray) -> dict:
    """A rank's rule from the hold-out's predictions at that rank: among ``scores`` (by name, one value
    per prediction; NaN counts as the score's floor), the threshold on the one that best tells
    ``correct`` predictions from wrong ones (balanced accuracy, :func:`calibrate_threshold`; ties: the
    first score named); ``always`` when none was wrong, ``never`` when none was right."""
    correct = np.asarray(correct, dtype=bool)
    counts = {"n_correct": int(correct.sum()), "n_wrong": int((~correct).sum())}
    if not counts["n_wrong"] or not counts["n_correct"]:
        return {"rule": RULE_ALWAYS if counts["n_correct"] else RULE_NEVER, **counts}
    chosen, best = "", None
    for name, values in scores.items():
        values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=SCORE_FLOORS[name])
        cal = calibrate_threshold(values[correct], values[~correct])
        if best is None or cal.balanced_accuracy > best.balanced_accuracy:
            chosen, best = name, cal
    return {
        "rule": RULE_THRESHOLD,
        "score": chosen,
        "threshold": best.threshold,
        "balanced_accuracy": best.balanced_accuracy,
        "correct_kept": best.seen_kept,
        "wrong_withheld": best.unseen_flagged,
        **counts,
    }
