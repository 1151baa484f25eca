"""The server's classification of decoded specimens: the same library calls as ``clibd
classify`` (Embedder -> ReferenceIndex.search -> predict_taxonomy against the threshold
calibrated for the query modality), so its rows carry the same columns as
``clibd classify --format csv``, plus each row's k nearest keys for the page.

A specimen with both a photo and a barcode (same id) is classified from each: one row per
modality, the photo's first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from clibd.embed.embedder import Embedder
from clibd.index.faiss_index import ReferenceIndex
from clibd.index.vote import predict_taxonomy


@dataclass
class Classified:
    table: pd.DataFrame  # the columns of `clibd classify --format csv`, one row per query
    modality: list[str]  # per row: "image" or "dna"
    scores: np.ndarray  # [rows, k] cosine similarity of the k nearest keys, nearest first
    positions: np.ndarray  # [rows, k] the keys' positions in the library (-1: fewer keys than k)
    thresholds: dict[str, float]  # per query modality, the calibrated new-species threshold


def threshold_for(library: ReferenceIndex, modality: str) -> float:
    threshold = library.metadata["thresholds"].get(modality)
    if threshold is None:
        raise ValueError(f"the index has no new-species threshold calibrated for {modality} queries")
    return float(threshold["threshold"])


def classify_uploads(
    embedder: Embedder,
    library: ReferenceIndex,
    images: Sequence[tuple[str, Image.Image]],
    barcodes: Sequence[tuple[str, str]],
    k: int = 5,
) -> Classified:
    """``images`` ``[(id, RGB image)]`` and ``barcodes`` ``[(id, sequence)]`` -> one row per query."""
    k = min(k, len(library))
    parts = []
    if images:
        embedded = embedder.embed_images([image for _, image in images])
        if embedded.skipped:  # decoded upstream, so only a transform failure lands here
            raise ValueError(f"images failed after decoding: {embedded.skipped}")
        parts.append(("image", [sid for sid, _ in images], embedded.embeddings))
    if barcodes:
        emb, ids = embedder.embed_dna([seq for _, seq in barcodes], [sid for sid, _ in barcodes])
        parts.append(("dna", ids, emb))
    tables, modality, scores, positions, thresholds = [], [], [], [], {}
    for name, ids, emb in parts:
        thresholds[name] = threshold_for(library, name)
        s, p = library.search(emb, k)
        tables.append(predict_taxonomy(s, p, library.taxonomy, library.ids, ids, thresholds[name]))
        modality += [name] * len(ids)
        scores.append(s)
        positions.append(p)
    if not tables:
        s, p = np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return Classified(predict_taxonomy(s, p, library.taxonomy, library.ids, [], 0.0), [], s, p, {})
    order = _photo_then_barcode(tables, parts)
    table = pd.concat(tables, ignore_index=True).iloc[order].reset_index(drop=True)
    return Classified(table, [modality[i] for i in order], np.concatenate(scores)[order],
                      np.concatenate(positions)[order], thresholds)


def _photo_then_barcode(tables: list[pd.DataFrame], parts: list) -> np.ndarray:
    """Row order: specimens in first-seen order, each one's photo row before its barcode row."""
    ids = pd.concat([t["id"] for t in tables], ignore_index=True)
    first_seen = pd.factorize(ids)[0]
    kind = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)])
    return np.lexsort((np.arange(len(ids)), kind, first_seen))
