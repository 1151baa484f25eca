"""Fused image+DNA features, scored as the published CLIBD evaluation scores them.

For the specimens that have both an image and a DNA embedding (each L2-normalised):

- ``image_dna_mean``: the element-wise mean of the two, ``D``-dim;
- ``image_dna_concat``: the two side by side, ``2D``-dim;
- ``all`` (keys only, when image, DNA and text keys are all present): the image, DNA and text
  keys stacked into one key set of three times the rows, each row with its specimen's labels.

Every query type is scored against every key type of the same width (the search normalises
both sides, so ``avg`` is compared by direction and ``concat`` against ``concat`` scores the
mean of the image and DNA cosines). Hence the extra pairs: ``image_dna_mean`` against the
image, DNA, text, ``image_dna_mean`` and ``all`` keys; ``image_dna_concat`` against
``image_dna_concat``; and the image, DNA and text queries against ``image_dna_mean`` and ``all``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from clibd.config import MODALITIES

AVG = "image_dna_mean"
CONCAT = "image_dna_concat"
ALL_KEYS = "all"

Labelled = tuple[np.ndarray, pd.DataFrame]


def _image_and_dna(by_modality: Mapping[str, Labelled]) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Image and DNA rows of the same specimens (matched by processid, image order kept)."""
    image_emb, image_rows = by_modality["image"]
    dna_emb, dna_rows = by_modality["dna"]
    dna_at = pd.Series(np.arange(len(dna_rows)), index=dna_rows["processid"].to_numpy())
    both = image_rows["processid"].isin(dna_at.index).to_numpy()
    picks = dna_at.loc[image_rows.loc[both, "processid"].to_numpy()].to_numpy()
    return image_emb[both], dna_emb[picks], image_rows[both].reset_index(drop=True)


def fuse(by_modality: Mapping[str, Labelled], keys: bool) -> dict[str, Labelled]:
    """The fused entries of one role: ``avg`` and ``concat`` (and ``all`` for ``keys``)."""
    image, dna, rows = _image_and_dna(by_modality)
    fused = {
        AVG: ((image.astype(np.float64) + dna) / 2, rows),  # in float64, as the original's np.mean of .tolist()
        CONCAT: (np.concatenate([image, dna], axis=1), rows),
    }
    if keys and all(m in by_modality for m in MODALITIES):
        stacked = [by_modality[m] for m in MODALITIES]
        fused[ALL_KEYS] = (
            np.concatenate([emb for emb, _ in stacked]),
            pd.concat([rows for _, rows in stacked], ignore_index=True),
        )
    return fused


def with_fused_features(
    queries: Mapping[str, Mapping[str, Labelled]], keys: Mapping[str, Labelled]
) -> tuple[dict[str, dict[str, Labelled]], dict[str, Labelled], list[tuple[str, str]]]:
    """``queries`` and ``keys`` with the fused entries added, and the (query, key) pairs to
    score: every pair of the inputs, then every pair involving a fused entry whose widths match.

    Needs image and DNA embeddings (with a ``processid`` column in their rows) in every role.
    """
    missing = [name for name, by_mod in [("keys", keys), *queries.items()] if not {"image", "dna"} <= set(by_mod)]
    if missing:
        raise ValueError(f"eval.fused_pairs: fused image+DNA pairs need image and DNA embeddings; {missing} lack one")
    fused_queries = {role: {**by_mod, **fuse(by_mod, keys=False)} for role, by_mod in queries.items()}
    fused_keys = {**keys, **fuse(keys, keys=True)}
    key_width = {name: np.shape(emb)[1] for name, (emb, _) in fused_keys.items()}
    query_width = {name: np.shape(emb)[1] for name, (emb, _) in next(iter(fused_queries.values()), {}).items()}
    pairs = [
        (q, k)
        for q, width in query_width.items()  # query-major, as the results table reads
        for k in fused_keys
        if (q not in (AVG, CONCAT) and k in keys) or key_width[k] == width  # fused: only equal widths
    ]
    return fused_queries, fused_keys, pairs
