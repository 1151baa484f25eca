"""Real BOLD barcodes split into a reference half and new specimens, and a small model that embeds
them usefully without training: an image + DNA + text model whose DNA tower is the recipe's bag of
overlapping 8-mers (docs/dna_recipe.md) with its table fitted on the reference barcodes, no labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clibd.config import Config, DataConfig, DnaTowerConfig, ImageTowerConfig, ModelConfig, TextTowerConfig
from clibd.taxonomy import taxonomy_text
from clibd.train.pretrain_dna.spectral import fit_table
from tests.data_paths import BOLD_4K
from tests.helpers.tiny_checkpoint import save_run, tiny_model

RANK_COLUMNS = {"order_name": "order", "family_name": "family", "genus_name": "genus", "species_name": "species"}


def bold_halves(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shared 4k file as read (BOLD's columns), split at random into a reference half and new specimens."""
    bold = pd.read_csv(BOLD_4K, sep="\t", dtype=str, keep_default_na=False)
    reference = np.random.default_rng(seed).permutation(len(bold)) < len(bold) // 2
    return bold[reference].reset_index(drop=True), bold[~reference].reset_index(drop=True)


def bold_model(folder: Path, reference: pd.DataFrame, width: int = 64, seed: int = 0) -> Path:
    """The model (module docstring) saved as a run under ``folder`` (its cache there too): the checkpoint dir."""
    cfg = ModelConfig(
        embed_dim=width,
        image=ImageTowerConfig(name="test_vit", image_size=32),
        dna=DnaTowerConfig(
            k=8, stride=1, hidden_size=width, num_layers=0, num_heads=2, pooling="kmer_bag", head="identity"
        ),
        text=TextTowerConfig(
            name=None, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=300
        ),
    )
    taxa = reference.rename(columns=RANK_COLUMNS)
    model = tiny_model(taxonomy_text(taxa, "{order} {family} {genus} {species}", "not_classified").tolist(), seed, cfg)
    tower = model.towers["dna"]
    fit_table(tower.backbone.get_input_embeddings(), reference["nucleotides"].tolist(), tower.tokenizer, seed, 0.02)
    run = Config(data=DataConfig(cache_dir=str(folder / "cache"), num_workers=0))
    return save_run(folder, model, run)
