"""A reference library from any labelled table: ``clibd index build --from TABLE``.

Every usable row of the table (``clibd.data.sources.labelled``: a BOLD TSV / CSV, a BOLD data
package, a FASTA with taxonomy in its headers, a parquet, the BIOSCAN-5M metadata) becomes a key;
no split is needed. In order:

1. bad records and, for a DNA library, barcodes failing ``cfg.quality`` are skipped, counted by
   reason (``skipped`` in the metadata; ``clibd index info`` prints them);
2. rows are put on one strand (``clibd.index.strand``), the reverse-complemented ones counted;
3. every row is embedded with the key modality, and with each other specimen modality the model
   has and the table carries (for calibration queries: a DNA library from an image + DNA + text
   model built from a table without photos is calibrated for DNA queries only);
4. the table calibrates itself by the evaluation's protocol
   (``clibd.data.species_split.unseen_species_split``, seeded): in every genus with two or more
   species one species is held out; the seen species' rows are halved into keys and queries;
   the held-out species' rows query keys from which they are absent, as a new species would be.
   Rows without genus or species are keys only. At most ``MAX_QUERIES`` queries of each kind
   are used (a seeded sample). A table too small for ``MIN_QUERIES`` seen and unseen queries is
   not calibrated: the library says so and stores no threshold (``clibd.index.calibration``);
5. the library of all the keys is saved with its provenance: the file, its rows, its sha256, the
   checkpoint and its hash, the seed, when it was built (``clibd index info``, ``/api/health``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from accelerate import PartialState

from clibd.config import SPECIMEN_MODALITIES, Config
from clibd.data.quality import barcode_quality
from clibd.data.sources.labelled import read_labelled_table
from clibd.data.species_split import ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN, unseen_species_split
from clibd.embed.datasets import embed_roles, eval_encoder
from clibd.embed.records import photo_files
from clibd.embed.run_dir import checkpoint_hash
from clibd.index.calibration import Queries, query_evidence
from clibd.index.library import Library, assemble, orient_rows
from clibd.taxonomy import ALL_RANKS

# Calibration queries of each kind (seen, unseen species) at most: a table of millions calibrates on a
# seeded sample (each query is searched and aligned), with the same keys.
MAX_QUERIES = 5000
UNUSED = "unused"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def photos_by_id(folder: str | Path) -> dict[str, str]:
    """Photo files under ``folder`` (recursively, every format PIL opens) by file name without extension
    (the processid)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images: photo folder not found: {folder}")
    return {path.stem: str(path) for path in photo_files([folder])[0]}


def _quality_skips(cfg: Config, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows whose barcode passes ``cfg.quality``, and the failures counted by reason."""
    reasons = pd.Series(barcode_quality(table["dna_barcode"].astype("string").fillna("").tolist(), cfg.quality))
    failed = (reasons != "").to_numpy(bool)
    kinds = reasons[failed].str.replace(
        r" \([^)]*\)", "", regex=True
    )  # "too_short (180 valid nt < 200)" -> "too_short"
    counts = ("barcode quality: " + kinds).value_counts().to_dict()
    return table[~failed].reset_index(drop=True), {str(k): int(v) for k, v in counts.items()}


def hold_out(table: pd.DataFrame, seed: int, most: int = MAX_QUERIES) -> np.ndarray:
    """Each row's role in the calibration (``key``, ``query_seen``, ``query_unseen``; ``unused``): the
    protocol on the rows with genus and species, keys for the others; at most ``most`` queries of each
    kind (a seeded sample; the others are left out of the calibration, neither key nor query)."""
    labelled = (table["genus"].notna() & table["species"].notna()).to_numpy(bool)
    roles = np.full(len(table), ROLE_KEY, dtype=object)
    if labelled.any():
        roles[labelled] = unseen_species_split(table[labelled], seed).to_numpy(object)
    rng = np.random.default_rng(seed)
    for role in (ROLE_SEEN, ROLE_UNSEEN):
        rows = np.flatnonzero(roles == role)
        if len(rows) > most:
            roles[rng.choice(rows, len(rows) - most, replace=False)] = UNUSED
    return roles


def build_table_library(
    cfg: Config,
    model: Any,
    modality: str,
    checkpoint: str | Path,
    source: str | Path,
    state: PartialState,
    images: Optional[str | Path] = None,
    seed: int = 0,
) -> Optional[Library]:
    """The library of ``source`` (module docstring); on the main process of ``state`` (None elsewhere)."""
    if modality not in SPECIMEN_MODALITIES or modality not in model.modalities:
        raise ValueError(
            f"a library from a table holds photos or barcodes: --modality image or dna, and a model with that tower "
            f"(it has {list(model.modalities)}); got {modality}"
        )
    refs = photos_by_id(images) if images is not None else None
    table, skips = read_labelled_table(
        source, require_dna=modality == "dna", require_image=modality == "image", image_refs=refs
    )
    skipped = dict(skips.counts)
    if modality == "dna":
        table, failed = _quality_skips(cfg, table)
        skipped.update(failed)
    if not len(table):
        raise ValueError(f"{source}: no usable row for a {modality} library ({skips.read} read; skipped {skipped})")
    tables = {"all": table}
    strand, reversed_rows = orient_rows(tables, fit_on="all")
    table = tables["all"]
    carried = {"dna": table["dna_barcode"].notna().any(), "image": table["image_ref"].notna().any()}
    modalities = [m for m in SPECIMEN_MODALITIES if m in model.modalities and (m == modality or carried[m])]
    model_hash = checkpoint_hash(checkpoint)
    embedded, left_out = embed_roles(
        cfg, model, {"all": table}, modalities, state, model_hash, eval_encoder(cfg, model)
    )
    if not state.is_main_process:
        return None
    key_emb, key_rows = embedded["all"][modality]
    for reason, count in left_out.get("all", {}).get(modality, {}).items():
        skipped[f"not embedded: {reason}"] = count
    roles = hold_out(key_rows, seed)
    queries: Queries = {"seen": {}, "unseen": {}}
    for query_modality in modalities:
        emb, rows = embedded["all"][query_modality]
        role = pd.Series(roles, index=key_rows["processid"]).reindex(rows["processid"]).to_numpy(object)
        for name, wanted in (("seen", "query_seen"), ("unseen", "query_unseen")):
            take = role == wanted
            queries[name][query_modality] = (emb[take], rows[take].reset_index(drop=True))
    source = Path(source).resolve()
    metadata = {
        "modality": modality,
        "checkpoint": str(Path(checkpoint).resolve()),
        "dataset": f"table:{source}",
        "provenance": {
            "file": str(source),
            "rows": skips.read,
            "sha256": file_sha256(source),
            "checkpoint": str(Path(checkpoint).resolve()),
            "checkpoint_hash": model_hash,
            "images": None if images is None else str(Path(images).resolve()),
            "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hold_out_seed": seed,
            "keys": len(key_rows),
            "ranks": {rank: int(key_rows[rank].notna().sum()) for rank in ALL_RANKS},
        },
        "skipped": skipped,
        "reverse_strand": reversed_rows.get("all", 0),
    }
    evidence = query_evidence(modalities)
    return assemble(
        key_emb, key_rows, roles == ROLE_KEY, queries, evidence, cfg.eval.index, model_hash, metadata, strand
    )
