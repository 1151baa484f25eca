"""A reference library: labelled specimens embedded into a ``ReferenceIndex``, with the
new-species threshold calibrated on validation data, for ``clibd classify``.

Calibration (per query modality, image and/or DNA): the validation queries of seen species
(role ``val_seen``) and of unseen species (``val_unseen``) search the keys, from which every
key of a ``val_unseen`` species has been removed, so those species are truly absent from
the library, as a new species would be. The threshold on the best-match similarity that
best separates the two (balanced accuracy, ``clibd.index.vote.calibrate_threshold``) is
stored in the index metadata with the checkpoint hash (checked, with the dimension, when
the library is loaded).

With both an image and a DNA tower, an ``image+dna`` threshold is calibrated too, on the
validation specimens that have both, by their fused similarity (mean of the two).

Barcodes that fail ``cfg.quality`` (``clibd.data.quality.barcode_quality``) are left out of a
DNA library's keys and out of the DNA calibration queries: counted by role in the metadata's
``quality_skips`` (and printed by ``clibd index build``), as a new barcode that fails them
gets no prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from accelerate import PartialState

from clibd.config import SPECIMEN_MODALITIES, Config
from clibd.data.quality import barcode_quality
from clibd.data.sources import read_specimens
from clibd.embed.datasets import embed_roles, eval_encoder, role_tables
from clibd.embed.embedder import Embedder
from clibd.embed.run_dir import checkpoint_hash
from clibd.index.classify_specimens import FUSED, search_mean
from clibd.index.faiss_index import ReferenceIndex
from clibd.index.vote import calibrate_threshold
from clibd.taxonomy import ALL_RANKS


def build_library(
    cfg: Config, model: Any, modality: str, checkpoint: str | Path, state: PartialState
) -> Optional[ReferenceIndex]:
    """Embed the ``keys`` role with ``modality`` into an index; calibrate a threshold for
    each query modality the model has. Every process of ``state`` embeds its share; the
    index is returned on the main process only (None elsewhere)."""
    if modality not in model.modalities:
        raise ValueError(f"the model has no {modality} tower (enabled: {list(model.modalities)})")
    table, _ = read_specimens(cfg.data)
    tables = role_tables(cfg, table, ["keys", "val_seen", "val_unseen"])
    empty = [role for role in ("val_seen", "val_unseen") if not len(tables[role])]
    if empty:
        raise ValueError(f"calibrating the new-species threshold needs validation queries; roles {empty} are empty")
    model_hash = checkpoint_hash(checkpoint)
    quality_skips = {}
    if modality == "dna":
        fails = _fails(cfg, tables["keys"])
        tables["keys"], quality_skips["keys"] = tables["keys"][~fails], int(fails.sum())
    encoder = eval_encoder(cfg, model)  # one for keys and queries: one copy, one compile per tower
    keys, _ = embed_roles(cfg, model, {"keys": tables["keys"]}, [modality], state, model_hash, encoder)
    key_emb, key_rows = keys["keys"][modality]
    query_modalities = [m for m in SPECIMEN_MODALITIES if m in model.modalities]  # what classify reads from files
    queries, _ = embed_roles(
        cfg, model, {r: tables[r] for r in ("val_seen", "val_unseen")}, query_modalities, state, model_hash, encoder
    )
    if not state.is_main_process:
        return None  # every process embeds its share; the main one calibrates and builds

    unseen_species = tables["val_unseen"]["species"].dropna().unique()
    present = ~key_rows["species"].isin(unseen_species).to_numpy(dtype=bool)
    calibration_keys = ReferenceIndex(key_emb.shape[1], kind="flat")
    calibration_keys.add(key_emb[present], ids=key_rows["processid"][present].tolist())
    for role in ("val_seen", "val_unseen"):
        if "dna" in queries[role]:  # the rows embedded, minus those failing the barcode checks
            emb, rows = queries[role]["dna"]
            fails = _fails(cfg, rows)
            queries[role]["dna"], quality_skips[role] = (emb[~fails], rows[~fails]), int(fails.sum())
    thresholds = {}
    for query in query_modalities + ([FUSED] if set(SPECIMEN_MODALITIES) <= set(query_modalities) else []):
        best = {role: _best_similarity(calibration_keys, queries[role], query) for role in ("val_seen", "val_unseen")}
        thresholds[query] = {
            **calibrate_threshold(best["val_seen"], best["val_unseen"]).to_dict(),
            "keys_held_out": int((~present).sum()),
        }

    index = ReferenceIndex(
        key_emb.shape[1],
        kind=cfg.eval.index,
        checkpoint_hash=model_hash,
        metadata={
            "modality": modality,
            "thresholds": thresholds,
            "checkpoint": str(checkpoint),
            "dataset": f"{cfg.data.format}:{cfg.data.root}",
            "key_splits": list(cfg.data.splits.keys),
            "quality_skips": quality_skips,
        },
    )
    # image_ref travels with the keys so that `clibd serve` can show each neighbour's photo.
    columns = [*ALL_RANKS, *(["image_ref"] if "image_ref" in key_rows else [])]
    index.add(key_emb, ids=key_rows["processid"].tolist(), taxonomy=key_rows[columns])
    return index


def _best_similarity(
    keys: ReferenceIndex, queries: dict[str, tuple[np.ndarray, pd.DataFrame]], query: str
) -> np.ndarray:
    """Each query's similarity to its nearest key; ``image+dna``: the specimens with both, by the
    mean of their two similarities (``clibd.index.classify_specimens``: the mean query, rescaled)."""
    if query != FUSED:
        return keys.search(queries[query][0], 1)[0][:, 0]
    (image, image_rows), (dna, dna_rows) = queries["image"], queries["dna"]
    both = pd.Index(image_rows["processid"]).get_indexer(dna_rows["processid"])
    pairs = np.stack([image[both[both >= 0]], dna[both >= 0]], axis=1)
    return search_mean(keys, pairs, np.ones(pairs.shape[:2], dtype=bool), 1)[0][:, 0]


def _fails(cfg: Config, rows: pd.DataFrame) -> np.ndarray:
    """Which rows have a barcode that fails ``cfg.quality`` (rows without one are left out elsewhere)."""
    barcodes = rows["dna_barcode"].astype("string").fillna("")
    failed = np.array([q != "" for q in barcode_quality(barcodes.tolist(), cfg.quality)], dtype=bool)
    return failed & (barcodes != "").to_numpy(bool)


def load_library(directory: str | Path, embedder: Embedder) -> ReferenceIndex:
    """Load a library, refusing one built with another checkpoint or dimension."""
    index = ReferenceIndex.load(directory, expected_dim=embedder.dim, expected_checkpoint_hash=embedder.checkpoint_hash)
    if "thresholds" not in index.metadata or index.taxonomy is None:
        raise ValueError(
            f"{directory} is a ReferenceIndex without taxonomy or thresholds: build it with `clibd index build`"
        )
    return index
