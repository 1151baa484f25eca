"""A small specimen table a model can learn from in seconds: every species has its own
barcode (a random prototype with a few mutations per specimen) and its own image colour
(plus pixel noise), written as a CSV + PNGs that ``data.format=tabular`` reads; and a
tiny local text model (BERT + WordPiece tokenizer) so text runs are reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from transformers import BertConfig, BertModel

from clibd.config import TextTowerConfig
from clibd.models.text import build_text_tokenizer

GENERA = ["Aedes", "Bombus", "Culex", "Drosophila", "Eristalis", "Formica"]


def write_learnable_table(
    root: Path,
    n_species: int = 7,
    n_unseen: int = 1,
    train_per_species: int = 12,
    val_per_species: int = 4,
    length: int = 120,
    seed: int = 0,
) -> Path:
    """Seen species: ``train`` + ``val`` rows; the last ``n_unseen``: ``key_unseen`` + ``val_unseen``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    per = train_per_species + val_per_species
    species = np.repeat(np.arange(n_species), per)
    n = len(species)
    bases = np.array(list("ACGT"))
    prototypes = rng.integers(0, 4, (n_species, length))
    codes = prototypes[species]
    mutate = rng.random((n, length)) < 0.05
    codes[mutate] = rng.integers(0, 4, mutate.sum())
    colours = rng.integers(40, 216, (n_species, 3))
    pixels = np.clip(colours[species][:, None, None, :] + rng.normal(0, 25, (n, 24, 24, 3)), 0, 255).astype(np.uint8)
    for i in range(n):
        Image.fromarray(pixels[i]).save(root / f"S{i:04d}.png")
    genus = np.array(GENERA * (n_species // len(GENERA) + 1))[:n_species]
    table = pd.DataFrame(
        {
            "processid": [f"S{i:04d}" for i in range(n)],
            "split": np.where(
                species < n_species - n_unseen,
                np.where(np.arange(n) % per < train_per_species, "train", "val"),
                np.where(np.arange(n) % per < train_per_species, "key_unseen", "val_unseen"),
            ),
            "order": np.where(species % 2 == 0, "Diptera", "Hymenoptera"),
            "family": [f"Fam{s % 3}" for s in species],
            "genus": genus[species],
            "species": [f"{genus[s]} sp{s}" for s in species],
            "dna_barcode": ["".join(row) for row in bases[codes]],
            "image_ref": [f"S{i:04d}.png" for i in range(n)],
        }
    )
    path = root / "specimens.csv"
    table.to_csv(path, index=False)
    return path


def write_text_model(root: Path, corpus: list[str], seed: int = 0) -> Path:
    """A 1-layer BERT + WordPiece tokenizer saved in HF format (``model.text.name`` = this dir).

    Its weights come from ``seed``, not from the global RNG: they seed the text tower of the
    training tests, which otherwise depended on whichever tests ran earlier in the process
    (the last loss of one run ranged 1.08-1.32 with what had been imported and built before).
    """
    cfg = TextTowerConfig(name=None, vocab_size=120)
    tokenizer = build_text_tokenizer(cfg, corpus)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        BertModel(config, add_pooling_layer=False).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root
