"""A reference library: labelled specimens embedded into a ``ReferenceIndex``, calibrated on a
hold-out of species, with the keys' barcodes and a strand model, for ``clibd classify``.

Two ways to build one (``clibd index build``):

- from a training config (:func:`build_library`): the ``keys`` role are the keys; the validation
  queries of seen species (role ``val_seen``) and of unseen species (``val_unseen``) calibrate it,
  against the keys from which every key of a ``val_unseen`` species has been removed, so those
  species are truly absent from the library, as a new species would be;
- from any labelled table (``clibd.index.table_library``): every usable row is a key, and the
  table calibrates itself by the evaluation's hold-out of species.

Calibration (``clibd.index.calibration``): per kind of query evidence the model can read from
files (image and/or DNA, and ``image+dna`` with both towers), the new-species threshold and each
rank's rule, stored in the index metadata with the checkpoint hash (checked, with the dimension,
when the library is loaded).

Barcodes: rows are put on one strand (``clibd.index.strand``; the strand model is saved as
``strand.npy`` and orients classify's queries), the keys' barcodes are saved as
``barcodes.arrow`` (``clibd.index.key_barcodes``) for the % identity of DNA hits, and barcodes
that fail ``cfg.quality`` (``clibd.data.quality.barcode_quality``) are left out of a DNA
library's keys and out of the DNA calibration queries: counted in the metadata's
``quality_skips``, as a new barcode that fails them gets no prediction. A library is written
whole or not at all (``clibd.atomic``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np
import pandas as pd
from accelerate import PartialState

from clibd.config import SPECIMEN_MODALITIES, Config
from clibd.data.quality import barcode_quality
from clibd.data.sources import read_specimens
from clibd.embed.datasets import embed_roles, eval_encoder, role_tables
from clibd.embed.embedder import Embedder
from clibd.embed.run_dir import checkpoint_hash
from clibd.index.calibration import Queries, calibrate_library, query_evidence
from clibd.index.confidence import EMBEDDING, RERANKED
from clibd.index.faiss_index import ReferenceIndex
from clibd.index.key_barcodes import KeyBarcodes
from clibd.index.strand import REVERSE, StrandModel
from clibd.taxonomy import ALL_RANKS

K = 5  # the neighbours that vote when the rules are calibrated (clibd classify's default --k)


@dataclass
class Library:
    """A built library: the index (keys, taxonomy, metadata) and its DNA side."""

    index: ReferenceIndex
    barcodes: Optional[KeyBarcodes]
    strand: Optional[StrandModel]

    def save(self, directory: str | Path) -> Path:
        """Write the library's files into ``directory``, the index's manifest (listing them all) last.
        Whole or not at all is the caller's (``clibd index build``: ``clibd.atomic.atomic_output``)."""
        extra = []
        if self.barcodes is not None:
            extra.append(self.barcodes.save(directory))
        if self.strand is not None:
            extra.append(self.strand.save(directory))
        return self.index.save(directory, extra_files=extra)


class KeyDna(NamedTuple):
    """What a loaded library knows of its keys' barcodes (None: a library without barcodes)."""

    barcodes: Optional[KeyBarcodes]
    strand: Optional[StrandModel]


def fails_quality(cfg: Config, rows: pd.DataFrame) -> np.ndarray:
    """Which rows have a barcode that fails ``cfg.quality`` (rows without one are left out elsewhere)."""
    barcodes = rows["dna_barcode"].astype("string").fillna("")
    failed = np.array([q != "" for q in barcode_quality(barcodes.tolist(), cfg.quality)], dtype=bool)
    return failed & (barcodes != "").to_numpy(bool)


def orient_rows(tables: dict[str, pd.DataFrame], fit_on: str) -> tuple[Optional[StrandModel], dict[str, int]]:
    """Put every table's barcodes on the strand of ``tables[fit_on]``'s, in place: the strand model
    is fitted on those (oriented against each other, ``clibd.index.strand``) and orients them all.
    Returns the model (None: no barcode to fit it on) and the rows reverse-complemented per table."""
    has = tables[fit_on]["dna_barcode"].notna().to_numpy(bool)
    if not has.any():
        return None, {}
    strand, _ = StrandModel.fit(tables[fit_on].loc[has, "dna_barcode"].tolist())
    flipped = {}
    for name, rows in tables.items():
        present = rows["dna_barcode"].notna().to_numpy(bool)
        oriented, turned = strand.orient(rows.loc[present, "dna_barcode"].tolist())
        rows["dna_barcode"] = rows["dna_barcode"].astype("string")
        rows.loc[present, "dna_barcode"] = oriented
        flipped[name] = int((turned == REVERSE).sum())
    return strand, flipped


def assemble(
    key_emb: np.ndarray,
    key_rows: pd.DataFrame,
    calibration_keys: np.ndarray,
    queries: Queries,
    evidence: list[str],
    kind: str,
    model_hash: Optional[str],
    metadata: dict[str, Any],
    strand: Optional[StrandModel],
) -> Library:
    """The library of ``key_emb`` / ``key_rows`` (oriented barcodes), calibrated with ``queries``
    against the keys ``calibration_keys`` (bool per key) marks."""
    has_barcodes = bool(key_rows["dna_barcode"].notna().any())
    calibration = ReferenceIndex(key_emb.shape[1], kind="flat")
    subset = key_rows[calibration_keys].reset_index(drop=True)
    if calibration_keys.any():
        calibration.add(key_emb[calibration_keys], ids=subset["processid"].tolist(), taxonomy=subset[list(ALL_RANKS)])
        subset_barcodes = KeyBarcodes(subset["dna_barcode"].astype("string").tolist()) if has_barcodes else None
        calibrated = calibrate_library(calibration, queries, evidence, K, subset_barcodes)
    else:
        calibrated = calibrate_library_refused(evidence)
    for entry in calibrated["thresholds"].values():
        entry["keys_held_out"] = int((~calibration_keys).sum())
    index = ReferenceIndex(key_emb.shape[1], kind=kind, checkpoint_hash=model_hash, metadata={**metadata, **calibrated})
    # image_ref travels with the keys so that `clibd serve` can show each neighbour's photo.
    columns = [*ALL_RANKS, *(["image_ref"] if "image_ref" in key_rows else [])]
    index.add(key_emb, ids=key_rows["processid"].tolist(), taxonomy=key_rows[columns])
    barcodes = KeyBarcodes(key_rows["dna_barcode"].astype("string").tolist()) if has_barcodes else None
    return Library(index, barcodes, strand)


def calibrate_library_refused(evidence: list[str]) -> dict[str, Any]:
    """The calibration entries of a library with no key left to calibrate against."""
    reason = "no key is left once the hold-out species are removed"
    empty = {"thresholds": {}, "identity_thresholds": {}, "rank_rules": {EMBEDDING: {}, RERANKED: {}}}
    return {**empty, "calibration": {"k": K, "not_calibrated": {kind: reason for kind in evidence}}}


def build_library(
    cfg: Config, model: Any, modality: str, checkpoint: str | Path, state: PartialState
) -> Optional[Library]:
    """Embed the ``keys`` role with ``modality`` into an index; calibrate it for each query modality
    the model has. Every process of ``state`` embeds its share; the library is returned on the
    main process only (None elsewhere)."""
    if modality not in model.modalities:
        raise ValueError(f"the model has no {modality} tower (enabled: {list(model.modalities)})")
    table, _ = read_specimens(cfg.data)
    tables = role_tables(cfg, table, ["keys", "val_seen", "val_unseen"])
    model_hash = checkpoint_hash(checkpoint)
    quality_skips = {}
    if modality == "dna":
        fails = fails_quality(cfg, tables["keys"])
        tables["keys"], quality_skips["keys"] = tables["keys"][~fails].reset_index(drop=True), int(fails.sum())
    strand, reversed_rows = orient_rows(tables, fit_on="keys")
    encoder = eval_encoder(cfg, model)  # one for keys and queries: one copy, one compile per tower
    keys, _ = embed_roles(cfg, model, {"keys": tables["keys"]}, [modality], state, model_hash, encoder)
    key_emb, key_rows = keys["keys"][modality]
    query_modalities = [m for m in SPECIMEN_MODALITIES if m in model.modalities]  # what classify reads from files
    embedded, _ = embed_roles(
        cfg, model, {r: tables[r] for r in ("val_seen", "val_unseen")}, query_modalities, state, model_hash, encoder
    )
    if not state.is_main_process:
        return None  # every process embeds its share; the main one calibrates and builds

    queries: Queries = {"seen": embedded["val_seen"], "unseen": embedded["val_unseen"]}
    for role, name in (("seen", "val_seen"), ("unseen", "val_unseen")):
        if "dna" in queries[role]:  # the rows embedded, minus those failing the barcode checks
            emb, rows = queries[role]["dna"]
            fails = fails_quality(cfg, rows)
            queries[role]["dna"] = (emb[~fails], rows[~fails].reset_index(drop=True))
            quality_skips[name] = int(fails.sum())
    unseen_species = tables["val_unseen"]["species"].dropna().unique()
    present = ~key_rows["species"].isin(unseen_species).to_numpy(dtype=bool)
    metadata = {
        "modality": modality,
        "checkpoint": str(checkpoint),
        "dataset": f"{cfg.data.format}:{cfg.data.root}",
        "key_splits": list(cfg.data.splits.keys),
        "quality_skips": quality_skips,
        "reverse_strand": reversed_rows,
    }
    evidence = query_evidence(query_modalities)
    return assemble(key_emb, key_rows, present, queries, evidence, cfg.eval.index, model_hash, metadata, strand)


def load_library(directory: str | Path, embedder: Embedder) -> ReferenceIndex:
    """Load a library, refusing one built with another checkpoint or dimension."""
    index = ReferenceIndex.load(directory, expected_dim=embedder.dim, expected_checkpoint_hash=embedder.checkpoint_hash)
    if "thresholds" not in index.metadata or index.taxonomy is None:
        raise ValueError(
            f"{directory} is a ReferenceIndex without taxonomy or thresholds: build it with `clibd index build`"
        )
    return index


def load_key_dna(directory: str | Path, index: ReferenceIndex) -> KeyDna:
    """The library's key barcodes (memory-mapped) and strand model, None where it has none."""
    return KeyDna(KeyBarcodes.load(directory, expected=len(index)), StrandModel.load(directory))
