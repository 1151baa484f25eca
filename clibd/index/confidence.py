"""How far each prediction is trusted: the library's calibrated rules applied to classify's rows.

Per row, by the kind of evidence it used (``image``, ``dna``, ``image+dna``; a photo+barcode row
without rules of its own is judged by the DNA ones): the new-species flag against the library's
threshold (``clibd.index.calibration``), then each rank against its rule, down to the deepest
confident rank (``clibd.index.vote.apply_rank_thresholds``), each rank by the score its rule reads
(similarity, margin or identity). Rows whose barcode hits were re-ranked by % identity are judged
by the rules calibrated for re-ranked rows: new species on the top hit's identity, each rank by
its rule for re-ranked hits.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from clibd.index.vote import apply_rank_thresholds, new_species_flag, rule_value
from clibd.taxonomy import EVAL_RANKS

FUSED = "image+dna"  # the evidence of a specimen classified from its photo and its barcode together


def per_evidence(evidence: np.ndarray, value: Callable[[str], float]) -> np.ndarray:
    """``value(e)`` for each row's evidence ``e``, computed once per kind."""
    return pd.Series(evidence, dtype=object).map({e: value(e) for e in set(evidence)}).to_numpy(float)


# The rules of a library's metadata ("rank_rules"): rows searched by embedding, and barcode rows
# re-ranked by identity (DNA only).
EMBEDDING, RERANKED = "embedding", "reranked"


def _rules(table: dict, kind: str) -> dict:
    return table.get(kind, table.get("dna", {}) if kind == FUSED else {})


def judge(
    predicted: pd.DataFrame, metadata: dict, evidence: np.ndarray, reranked: np.ndarray, threshold: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """``predicted`` (``clibd.index.vote.predict_taxonomy``'s rows, one per ``evidence``) judged
    (module docstring), and the new-species threshold each row was held to."""
    identity_novelty = metadata.get("identity_thresholds", {}).get("dna", {}).get("threshold", np.nan)
    if reranked.any():
        flag = new_species_flag(predicted["identity"].to_numpy(float), identity_novelty)
        predicted["possible_new_species"] = predicted["possible_new_species"].where(~reranked, flag)
        threshold = np.where(reranked, identity_novelty, threshold)
    rules = metadata.get("rank_rules", {})
    by_embedding, by_identity = rules.get(EMBEDDING, {}), rules.get(RERANKED, {}).get("dna", {})
    evidence = np.asarray(evidence, dtype=object)
    scores, thresholds = {}, {}
    for rank in EVAL_RANKS:
        scores[rank], thresholds[rank] = np.full(len(predicted), np.nan), np.full(len(predicted), np.nan)
        groups = [((evidence == kind) & ~reranked, _rules(by_embedding, kind).get(rank)) for kind in set(evidence)]
        for rows, rule in [*groups, (reranked, by_identity.get(rank))]:
            name, value = rule_value(rule)
            thresholds[rank][rows] = value
            scores[rank][rows] = predicted[f"{rank}_{name}"].to_numpy(float)[rows]
    return apply_rank_thresholds(predicted, scores, thresholds), threshold
