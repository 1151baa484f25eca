"""A tiny CLIBD model (all three towers; DNA a 1-layer BERT, or the bag of k-mers) saved in the real
checkpoint layout, for the embed / classify / eval tests, and a tiny BarcodeBERT-shaped BertForMaskedLM."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import BertConfig, BertForMaskedLM

from clibd.config import Config, DnaTowerConfig, ImageTowerConfig, ModelConfig, TextTowerConfig, save_config
from clibd.models.clibd_model import CLIBDModel
from clibd.models.text import build_text_tokenizer

CORPUS = [
    "Diptera Cecidomyiidae not_classified not_classified",
    "Diptera Sciaridae Bradysia Bradysia_impatiens",
    "Hymenoptera Braconidae Aleiodes not_classified",
]


def tiny_mlm(vocab_size: int, seed: int = 0) -> BertForMaskedLM:
    """A seeded 2-layer, 16-wide BertForMaskedLM: a BarcodeBERT-shaped DNA checkpoint (512 positions)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
    )
    return BertForMaskedLM(config).eval()


def tiny_model_cfg(image_size: int = 32) -> ModelConfig:
    return ModelConfig(
        embed_dim=16,
        image=ImageTowerConfig(name="test_vit", image_size=image_size),
        dna=DnaTowerConfig(k=4, max_nucleotides=660, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
        text=TextTowerConfig(
            name=None, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=200
        ),
    )


def bag_only_model_cfg() -> ModelConfig:
    """All three towers; DNA: the recipe's bag of k-mers with no transformer layer."""
    cfg = tiny_model_cfg()
    # head identity, hidden_size = embed_dim: the bag is the embedding
    dna = dict(k=4, max_nucleotides=660, hidden_size=16, num_layers=0, num_heads=2, pooling="kmer_bag", head="identity")
    cfg.dna = DnaTowerConfig(**dna)
    return cfg


def tiny_model(corpus: Sequence[str] = CORPUS, seed: int = 0, cfg: ModelConfig | None = None) -> CLIBDModel:
    torch.manual_seed(seed)
    cfg = cfg or tiny_model_cfg()
    return CLIBDModel(cfg, text_tokenizer=build_text_tokenizer(cfg.text, list(corpus))).eval()


def save_run(run_dir: Path, model: CLIBDModel, cfg: Config | None = None) -> Path:
    """``run_dir/model`` (save_pretrained) + ``run_dir/config.yaml``, as ``python train.py`` leaves them."""
    cfg = cfg or Config()
    cfg.model = model.cfg
    save_config(cfg, run_dir / "config.yaml")
    return model.save_pretrained(run_dir / "model")
