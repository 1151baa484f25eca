"""A reference library's calibration: the new-species threshold and each rank's rule, measured on
queries of seen and unseen species against keys from which the unseen species are absent.

Per kind of query evidence (``image``, ``dna``, and ``image+dna`` for specimens with both):

- ``thresholds[evidence]``: the new-species threshold on the nearest key's similarity that best
  separates seen from unseen queries (balanced accuracy; ``clibd.index.vote.calibrate_threshold``);
- ``rank_rules["embedding"][evidence][rank]``: each rank's rule, fitted to tell right predictions
  at that rank from wrong ones over the seen and unseen queries together
  (``clibd.index.vote.calibrate_rank``): a threshold on the rank's similarity or its margin,
  whichever tells them apart better, or always / never;
- with the keys' barcodes, for DNA queries after the re-rank by % identity
  (``clibd.index.identity``, its default candidates and margin): ``identity_thresholds["dna"]``,
  the new-species threshold on the top hit's identity, and ``rank_rules["reranked"]["dna"]``, each
  rank's rule on its similarity, margin or identity. ``clibd classify --rerank identity`` judges
  DNA rows (and photo+barcode rows) by these.

The rules depend on ``k``, the neighbours that vote (stored; classify with another k is judged by
rules fitted for this one). A kind of evidence with fewer than ``MIN_QUERIES`` seen or unseen
queries is not calibrated: the library says which and why (``calibration["not_calibrated"]``),
stores no threshold for it, and classify shows its predictions without a flag or a confident rank.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from clibd.config import SPECIMEN_MODALITIES
from clibd.index.classify_specimens import SEARCH_DEPTH, search_mean
from clibd.index.confidence import EMBEDDING, FUSED, RERANKED
from clibd.index.faiss_index import ReferenceIndex
from clibd.index.identity import Rerank, barcode_hits
from clibd.index.key_barcodes import KeyBarcodes
from clibd.index.vote import SCORE_FLOORS, calibrate_rank, calibrate_threshold, predict_taxonomy
from clibd.taxonomy import EVAL_RANKS

MIN_QUERIES = 5  # seen and unseen hold-out queries a kind of evidence needs to be calibrated
ROLES = ("seen", "unseen")

Queries = dict[str, dict[str, tuple[np.ndarray, pd.DataFrame]]]  # role -> modality -> (embeddings, rows)


def _evidence_queries(queries: Queries, evidence: str, role: str) -> tuple[np.ndarray, pd.DataFrame]:
    """``[n, m, D]`` embeddings (m: the evidence's modalities) and the rows, for one role."""
    if evidence != FUSED:
        emb, rows = queries[role].get(evidence, (np.zeros((0, 0, 0), np.float32), pd.DataFrame()))
        return emb[:, None, :], rows
    (image, image_rows), (dna, dna_rows) = queries[role]["image"], queries[role]["dna"]
    both = pd.Index(image_rows["processid"]).get_indexer(dna_rows["processid"])
    return np.stack([image[both[both >= 0]], dna[both >= 0]], axis=1), dna_rows[both >= 0].reset_index(drop=True)


def _correct(predicted: pd.DataFrame, rows: pd.DataFrame, rank: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose true ``rank`` is known, whether the prediction names it)."""
    truth = rows[rank].astype("string").reset_index(drop=True)
    known = truth.notna().to_numpy(bool)
    right = (predicted[rank].astype("string") == truth).fillna(False).to_numpy(bool)
    return known, right


def _rank_rules(predicted: pd.DataFrame, rows: pd.DataFrame, scores: tuple[str, ...]) -> dict[str, dict]:
    rules = {}
    for rank in EVAL_RANKS:
        known, right = _correct(predicted, rows, rank)
        by_name = {name: predicted[f"{rank}_{name}"].to_numpy(float)[known] for name in scores}
        rules[rank] = calibrate_rank(by_name, right[known])
    return rules


def calibrate_library(
    keys: ReferenceIndex,
    queries: Queries,
    evidence: list[str],
    k: int,
    barcodes: Optional[KeyBarcodes] = None,
) -> dict[str, Any]:
    """The calibration entries of a library's metadata (module docstring). ``keys``: the library
    without the unseen species, with taxonomy; ``queries``: ``{"seen"|"unseen": {modality:
    (embeddings, rows)}}`` (DNA rows' ``dna_barcode`` oriented); ``barcodes``: of ``keys``, in key
    order (None: no identity rules)."""
    k = min(k, len(keys))
    out: dict[str, Any] = {
        "thresholds": {},
        "identity_thresholds": {},
        "rank_rules": {EMBEDDING: {}, RERANKED: {}},
        "calibration": {"k": k, "not_calibrated": {}},
    }
    for kind in evidence:
        per_role = {role: _evidence_queries(queries, kind, role) for role in ROLES}
        counts = {role: len(per_role[role][1]) for role in ROLES}
        if min(counts.values()) < MIN_QUERIES:
            out["calibration"]["not_calibrated"][kind] = (
                f"too few hold-out queries to calibrate: {counts['seen']} of seen and {counts['unseen']} of "
                f"unseen species (at least {MIN_QUERIES} each are needed)"
            )
            continue
        emb = np.concatenate([per_role[role][0] for role in ROLES])
        rows = pd.concat([per_role[role][1] for role in ROLES], ignore_index=True)
        seen = np.arange(len(rows)) < counts["seen"]
        depth = min(max(k, SEARCH_DEPTH), len(keys))
        scores, positions = search_mean(keys, emb, np.ones(emb.shape[:2], dtype=bool), depth)
        novelty = calibrate_threshold(scores[seen, 0], scores[~seen, 0])
        out["thresholds"][kind] = novelty.to_dict()
        predicted = predict_taxonomy(
            scores, positions, keys.taxonomy, keys.ids, rows["processid"], novelty.threshold, k=k
        )
        out["rank_rules"][EMBEDDING][kind] = _rank_rules(predicted, rows, ("similarity", "margin"))
        if kind == "dna" and barcodes is not None:
            identity_rules = _identity_rules(keys, scores, positions, rows, seen, k, barcodes)
            out["identity_thresholds"][kind], out["rank_rules"][RERANKED][kind] = identity_rules
    return out


def _identity_rules(
    keys: ReferenceIndex,
    scores: np.ndarray,
    positions: np.ndarray,
    rows: pd.DataFrame,
    seen: np.ndarray,
    k: int,
    barcodes: KeyBarcodes,
) -> tuple[dict, dict]:
    """The new-species threshold on the top hit's identity and each rank's rule, after the re-rank
    (its default settings) of the searched candidates ``scores`` / ``positions``."""
    queries = rows["dna_barcode"].astype("string").fillna("").to_numpy(object)
    hits = barcode_hits(queries, scores, positions, k, barcodes, Rerank.for_library(keys.taxonomy["species"]))
    best = np.nan_to_num(hits.identity.identity[:, 0], nan=SCORE_FLOORS["identity"])
    novelty = calibrate_threshold(best[seen], best[~seen])
    predicted = predict_taxonomy(
        hits.scores,
        hits.positions,
        keys.taxonomy,
        keys.ids,
        rows["processid"],
        novelty.threshold,
        identity=hits.identity.identity,
        overlap=hits.identity.overlap,
        k=k,
    )
    return novelty.to_dict(), _rank_rules(predicted, rows, ("similarity", "margin", "identity"))


def query_evidence(modalities: list[str]) -> list[str]:
    """The kinds of evidence a model with these specimen modalities can be calibrated for."""
    kinds = [m for m in SPECIMEN_MODALITIES if m in modalities]
    return kinds + ([FUSED] if set(SPECIMEN_MODALITIES) <= set(kinds) else [])
