"""A small labelled specimen table from real data: BOLD barcodes and taxonomy
(../shared/data/dna/bold_insecta_4k.tsv) with the real BIOSCAN photos cycled as images,
split into the BIOSCAN-5M roles (seen species: train/val/test; unseen species:
key_unseen/val_unseen/test_unseen), written as a CSV that ``data.format=tabular`` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clibd.config import Config, DataConfig, EvalConfig
from tests.data_paths import BOLD_4K, REAL_IMAGES

SEEN_SPLITS = ["train", "train", "val", "test"]
UNSEEN_SPLITS = ["key_unseen", "key_unseen", "val_unseen", "test_unseen"]


def real_table(n_seen: int = 10, n_unseen: int = 5, per_species: int = 4, seed: int = 0) -> pd.DataFrame:
    bold = pd.read_csv(BOLD_4K, sep="\t", dtype=str)
    bold = bold.rename(
        columns={
            "order_name": "order",
            "family_name": "family",
            "genus_name": "genus",
            "species_name": "species",
            "nucleotides": "dna_barcode",
        }
    )
    bold = bold.dropna(subset=["order", "family", "genus", "species"])
    sizes = bold.groupby("species").size()
    species = np.random.default_rng(seed).permutation(sorted(sizes[sizes >= per_species].index))[: n_seen + n_unseen]
    rows = bold[bold["species"].isin(species)].groupby("species", sort=True).head(per_species).copy()
    unseen = set(species[n_seen:])
    position = rows.groupby("species").cumcount().to_numpy()
    rows["split"] = np.where(
        rows["species"].isin(unseen), np.array(UNSEEN_SPLITS)[position], np.array(SEEN_SPLITS)[position]
    )
    photos = sorted(str(p) for p in REAL_IMAGES.glob("*.jpg"))
    rows["image_ref"] = [photos[i % len(photos)] for i in range(len(rows))]
    return rows[["processid", "split", "order", "family", "genus", "species", "dna_barcode", "image_ref"]].reset_index(
        drop=True
    )


def real_config(folder: Path, table: pd.DataFrame) -> Config:
    """A config reading ``table`` (written to ``folder/specimens.csv``), caching under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "specimens.csv", index=False)
    cfg = Config()
    cfg.data = DataConfig(
        format="tabular", root=str(folder / "specimens.csv"), cache_dir=str(folder / "cache"), num_workers=0
    )
    cfg.eval = EvalConfig(batch_size=16)
    return cfg


def real_run(folder: Path, seed: int = 0, table: pd.DataFrame | None = None) -> Path:
    """An untrained tiny model saved as a run over ``real_table()``: returns the checkpoint dir
    (``folder/run/model``; the run's config.yaml beside it reads ``folder/data/specimens.csv``)."""
    from clibd.taxonomy import taxonomy_text
    from tests.helpers.tiny_checkpoint import save_run, tiny_model

    table = real_table() if table is None else table
    cfg = real_config(folder / "data", table)
    corpus = taxonomy_text(table, cfg.model.text.template, cfg.model.text.missing_word).tolist()
    return save_run(folder / "run", tiny_model(corpus, seed=seed), cfg)


def real_library(folder: Path) -> tuple[Path, Path]:
    """``real_run`` plus a DNA reference library built from it by ``clibd index build``:
    returns ``(checkpoint dir, index dir)``."""
    from clibd.cli import main

    checkpoint = real_run(folder)
    index = folder / "index"
    build = ["index", "build", "--checkpoint", str(checkpoint), "--modality", "dna", "--out", str(index)]
    assert main([*build, "eval.batch_size=8"]) == 0
    return checkpoint, index
