"""Classify new specimens against a reference library: one output row per specimen, from
its photo, its barcode, or both (``clibd classify``; reusable by any front end).

Specimens are matched by id (a photo's file name without extension = the barcode's id).
Each row says which ``evidence`` its prediction used (``image``, ``dna``, ``image+dna``, or
empty when nothing usable was given) and why any input was not used (``quality``:
``clibd.data.quality``; prefixed ``image:`` / ``dna:`` when both modalities were given).
A barcode that fails its checks is never used; a flagged photo only with ``keep_flagged``
(its reason stays in ``quality``).

Fusion (``image+dna``): the library indexes one key modality; a specimen's photo and
barcode embeddings are both compared with every key, and a key's fused similarity is the
mean of the two cosine similarities. That mean equals the dot product of the keys with
the mean of the two (unit) query embeddings, so one exact search with the normalised mean
finds the fused nearest keys over the whole library, and scaling its scores by the mean's
norm gives back the mean similarities. The vote (``clibd.index.vote``) then runs on these.
The new-species threshold of fused rows is the library's calibrated ``image+dna`` one when
it has it, else the mean of the image and DNA thresholds; none (a library too small to
calibrate, or no photo in its table): the flag is ``<NA>``.

Barcodes (``clibd.index.identity``, with the library's key barcodes): each row that used one
gets ``strand`` (``+`` / ``-``: the read was reverse-complemented before it was embedded,
``clibd.index.strand``), the % identity and overlap of its hits, and with ``rerank`` its
candidates re-ranked by identity; such rows are then judged by the identity rules (new species on
the top hit's identity, each rank on its mean identity) instead of the similarity ones. Every
row's ranks are cut at its deepest confident rank (``clibd.index.vote.apply_rank_thresholds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from clibd.config import SPECIMEN_MODALITIES
from clibd.embed.inputs import EmbeddedInputs
from clibd.index.confidence import FUSED, judge, per_evidence
from clibd.index.faiss_index import ReferenceIndex
from clibd.index.identity import Rerank, barcode_hits
from clibd.index.key_barcodes import KeyBarcodes
from clibd.index.vote import predict_taxonomy

FILE_COLUMNS = ["image_file", "dna_file", "dna_record"]
SEARCH_DEPTH = 20  # candidates searched per row: the first k vote, all of them count for each rank's margin


def fused_threshold(thresholds: dict, evidence: str) -> float:
    """The new-species threshold for one kind of evidence (module docstring); NaN: none."""
    if evidence in thresholds:
        return float(thresholds[evidence]["threshold"])
    if evidence == FUSED and all(m in thresholds for m in SPECIMEN_MODALITIES):
        return float(np.mean([thresholds[m]["threshold"] for m in SPECIMEN_MODALITIES]))
    return float("nan")


def _specimens(
    inputs: dict[str, EmbeddedInputs], keep_flagged: bool
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """``(table, used [n, 2] bool, embeddings [n, 2, D], sequences [n])`` over the union of ids, photos'
    order first; ``sequences``: each row's oriented barcode where it used one and the inputs were
    oriented, else None."""
    given = [m for m in SPECIMEN_MODALITIES if m in inputs]
    ids = pd.unique(pd.concat([inputs[m].records["id"] for m in given], ignore_index=True).astype(str))
    dim = next(iter(inputs.values())).embeddings.shape[1]
    table = pd.DataFrame({"id": pd.array(ids, dtype="string")})
    for column, dtype in zip(FILE_COLUMNS, ("string", "string", "Int64")):  # filled below where given
        table[column] = pd.array([None] * len(ids), dtype=dtype)
    used = np.zeros((len(ids), len(SPECIMEN_MODALITIES)), dtype=bool)
    embeddings = np.zeros((len(ids), len(SPECIMEN_MODALITIES), dim), dtype=np.float32)
    notes = []
    sequences = np.full(len(ids), None, dtype=object)
    for j, modality in enumerate(SPECIMEN_MODALITIES):
        if modality not in inputs:
            continue
        records = inputs[modality].records
        at = pd.Index(records["id"].astype(str)).get_indexer(ids)
        present = at >= 0
        aligned = records.reset_index(drop=True).reindex(at)  # position -1: a row of NA
        quality = aligned["quality"].astype("string").fillna("").to_numpy(str)
        table[f"{modality}_file"] = pd.array(aligned["file"].to_numpy(object), "string")
        if modality == "dna":
            table["dna_record"] = pd.array(aligned["record"].to_numpy(object), "Int64")
        ok = quality == "" if modality == "dna" or not keep_flagged else np.ones(len(ids), dtype=bool)
        # never an unreadable or damaged row (its embedding is NaN); position -1 takes the appended False
        embedded = np.append(np.isfinite(inputs[modality].embeddings).all(axis=1), False)
        used[:, j] = present & ok & embedded[at]
        if modality == "dna" and "sequence" in aligned:  # the read as embedded (on the library's strand)
            sequences = np.where(used[:, j] & aligned["sequence"].notna().to_numpy(bool), aligned["sequence"], None)
            table["strand"] = aligned["strand"].astype("string").where(used[:, j]).to_numpy()
        embeddings[used[:, j], j] = inputs[modality].embeddings[at[used[:, j]]]
        notes.append(np.where(quality == "", "", f"{modality}: " + quality) if len(given) > 1 else quality)
    image, dna = used.T
    table["evidence"] = pd.array(np.select([image & dna, image, dna], [FUSED, "image", "dna"], ""), "string")
    first, second = (notes[0], np.full(len(ids), "")) if len(notes) == 1 else notes
    both = (first != "") & (second != "")
    joined = np.where(both, np.char.add(np.char.add(first, "; "), second), np.char.add(first, second))
    table["quality"] = pd.array(joined, dtype="string")
    if "strand" not in table:
        table["strand"] = pd.array([None] * len(ids), dtype="string")
    table["strand"] = table["strand"].astype("string")
    return table[["id", *FILE_COLUMNS, "evidence", "quality", "strand"]], used, embeddings, sequences


def search_mean(
    index: ReferenceIndex, embeddings: np.ndarray, used: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest keys of each row by the mean of its used modalities' cosine similarities
    (module docstring): ``embeddings [n, m, D]`` unit rows, ``used [n, m]`` with one True per row
    at least. One exact search with the normalised mean query; its scores rescaled by the mean's norm."""
    query = (embeddings * used[:, :, None]).sum(axis=1) / used.sum(axis=1, keepdims=True)
    norm = np.linalg.norm(query, axis=1)
    scores, positions = index.search(query / np.maximum(norm, 1e-12)[:, None], k)
    return scores * norm[:, None], positions  # norm 1 for a single modality


@dataclass
class SpecimenSearch:
    """:func:`search_specimens`' answer: the table ``clibd classify`` writes, and per row the k
    nearest keys behind its prediction (for a front end that shows them)."""

    table: pd.DataFrame  # classify_specimens' columns, one row per specimen
    scores: np.ndarray  # [rows, k] (fused) similarity of the k nearest keys, nearest first; NaN where withheld
    positions: np.ndarray  # [rows, k] the keys' positions in the library; -1 where withheld
    thresholds: np.ndarray  # [rows] the new-species threshold the row was held to; NaN where withheld
    identity: np.ndarray  # [rows, k] % identity of each of those keys; NaN where none (no barcode, no overlap)
    reranked: np.ndarray  # [rows] bool: re-ranked by identity, so held to the identity thresholds


def search_specimens(
    index: ReferenceIndex,
    inputs: dict[str, EmbeddedInputs],
    k: int = 5,
    keep_flagged: bool = False,
    barcodes: Optional[KeyBarcodes] = None,
    rerank: Optional[Rerank] = None,
) -> SpecimenSearch:
    """:func:`classify_specimens`, keeping each row's nearest keys, scores, identity and threshold."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if rerank is not None and barcodes is None:
        raise ValueError(
            "the re-rank by identity needs the library's key barcodes; rebuild it with `clibd index build`"
        )
    table, used, embeddings, sequences = _specimens(inputs, keep_flagged)
    rows = np.flatnonzero(used.any(axis=1))
    evidence = table["evidence"].to_numpy(str)[rows]
    threshold = per_evidence(evidence, lambda e: fused_threshold(index.metadata["thresholds"], e))
    k = min(k, len(index))
    wide = min(max(k, rerank.candidates if rerank is not None else 0, SEARCH_DEPTH), len(index))
    if len(rows):
        scores, positions = search_mean(index, embeddings[rows], used[rows], wide)
    else:
        scores, positions = np.zeros((0, wide), np.float32), np.zeros((0, wide), np.int64)
    hits = barcode_hits(sequences[rows], scores, positions, k, barcodes, rerank)
    predicted = predict_taxonomy(
        hits.scores,
        hits.positions,
        index.taxonomy,
        index.ids,
        table["id"].iloc[rows],
        threshold,
        identity=hits.identity.identity,
        overlap=hits.identity.overlap,
        k=k,
    )
    predicted, threshold = judge(predicted, index.metadata, evidence, hits.reranked, threshold)
    predicted.index = rows
    every = SpecimenSearch(
        pd.concat([table, predicted.drop(columns="id")], axis=1),
        np.full((len(table), k), np.nan, np.float32),
        np.full((len(table), k), -1, np.int64),
        np.full(len(table), np.nan),
        np.full((len(table), k), np.nan),
        np.zeros(len(table), dtype=bool),
    )
    every.scores[rows], every.positions[rows] = hits.scores[:, :k], hits.positions[:, :k]
    every.thresholds[rows] = threshold
    every.identity[rows], every.reranked[rows] = hits.identity.identity, hits.reranked
    return every


def classify_specimens(
    index: ReferenceIndex,
    inputs: dict[str, EmbeddedInputs],
    k: int = 5,
    keep_flagged: bool = False,
    barcodes: Optional[KeyBarcodes] = None,
    rerank: Optional[Rerank] = None,
) -> pd.DataFrame:
    """One row per specimen: ``id``, ``image_file``, ``dna_file``, ``dna_record``, ``evidence``,
    ``quality``, ``strand``, then :func:`clibd.index.vote.predict_taxonomy`'s columns (empty where no
    evidence) and ``deepest_confident_rank``.

    ``inputs``: a chunk of ``clibd.embed.inputs.specimen_chunks`` (or ``embed_decoded``), from the checkpoint
    the index was built with."""
    return search_specimens(index, inputs, k, keep_flagged, barcodes, rerank).table
