"""What the training loop trains on: the model and the train / validation loaders built
from the configured source (the demo data generated first when the config asks for it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from clibd.config import Config
from clibd.data.dataset import SpecimenDataset, build_dataloader
from clibd.data.demo import ensure_demo
from clibd.data.gpu_augment import BatchAugment
from clibd.data.roles import select_role
from clibd.data.sources import read_specimens
from clibd.models.clibd_model import CLIBDModel
from clibd.models.finetune import trainable_parameters
from clibd.models.text import build_text_tokenizer
from clibd.taxonomy import taxonomy_text
from clibd.train.pretrain_dna.barcodes import unique_barcodes
from clibd.train.pretrain_dna.spectral import fit_table


@dataclass
class TrainingData:
    model: CLIBDModel
    train: SpecimenDataset
    train_loader: DataLoader
    val_loader: Optional[DataLoader]  # None when the val_seen role has no rows
    trainable: dict[str, tuple[int, int]]  # tower -> (trainable, total) parameters
    # data.augment.on_device: the training images' augmentation, applied by ``prepare``.
    augment: Optional[BatchAugment] = None

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A training batch on the device as the model takes it (images augmented there if configured)."""
        if self.augment is None or "image" not in batch:
            return batch
        return {**batch, "image": self.augment.to(batch["image"].device)(batch["image"])}

    def train_ids(self, index: torch.Tensor) -> list[str]:
        """The processids of training rows (a batch's ``index``), for error messages."""
        return [str(p) for p in self.train.processid[index.cpu().numpy()]]


def fit_dna_table(model: CLIBDModel, cfg: Config, train_rows: pd.DataFrame) -> None:
    """``model.dna.init: kmer_spectral``: the DNA tower's k-mer table fitted on the training rows'
    unique barcodes, their labels unused (``clibd.train.pretrain_dna.spectral``)."""
    tower = model.towers["dna"]
    barcodes, _ = unique_barcodes(train_rows["dna_barcode"], cfg.model.dna.k)
    embeddings = tower.backbone.get_input_embeddings()
    fit = fit_table(embeddings, barcodes, tower.tokenizer, cfg.train.seed, tower.backbone.config.initializer_range)
    print(f"model.dna: k-mer table of rank {fit['rank']} fitted on {len(barcodes)} training barcodes (no labels)")


def build_model(cfg: Config, train_rows, model_dir: Optional[Path]) -> CLIBDModel:
    """A fresh model, or the one saved in a checkpoint (its text vocabulary included)."""
    if model_dir is not None:
        return CLIBDModel.from_pretrained(model_dir, expected=cfg.model)
    dna = cfg.model.dna
    if dna.enabled and dna.init == "kmer_spectral" and dna.pretrained:
        raise ValueError(
            f"model.dna.init=kmer_spectral fits the k-mer table itself: unset model.dna.pretrained "
            f"({dna.pretrained}) or set model.dna.init=random"
        )
    text = cfg.model.text
    tokenizer = None
    if text.enabled and text.name is None:
        # Trained on the training rows only: held-out species names must not shape the vocabulary.
        tokenizer = build_text_tokenizer(text, taxonomy_text(train_rows, text.template, text.missing_word).tolist())
    model = CLIBDModel(cfg.model, tokenizer)
    if dna.enabled and dna.init == "kmer_spectral":
        fit_dna_table(model, cfg, train_rows)
    if cfg.model.image.enabled:  # saved in config.json, so the Embedder normalises as training did
        model.image_normalization = {"mean": list(cfg.data.mean), "std": list(cfg.data.std)}
    return model


def build_training_data(cfg: Config, accelerator: Accelerator, model_dir: Optional[Path] = None) -> TrainingData:
    if cfg.data.demo_specimens:
        with accelerator.main_process_first():
            ensure_demo(cfg.data)
    table, skips = read_specimens(cfg.data)
    if skips.skipped:
        accelerator.print(f"data: {skips.summary()}")
    train_rows = select_role(table, cfg.data.splits, "train")
    val_rows = select_role(table, cfg.data.splits, "val_seen")
    if not len(train_rows):
        raise ValueError(f"no training rows: no specimen has a split in data.splits.train={cfg.data.splits.train}")
    model = build_model(cfg, train_rows, model_dir)

    def dataset(rows, train: bool) -> SpecimenDataset:
        return SpecimenDataset(
            rows,
            cfg.data,
            image_size=cfg.model.image.image_size if "image" in model.modalities else None,
            dna_tokenizer=model.dna_tokenizer,
            text_tokenizer=model.text_tokenizer,
            text_cfg=cfg.model.text,
            train=train,
            seed=cfg.train.seed,
        )

    tc, dc = cfg.train, cfg.data
    train = dataset(train_rows, train=True)
    # drop_last: every process holds a full batch, so the rank losses average to the global one.
    train_loader = build_dataloader(
        train,
        tc.batch_size,
        shuffle=True,
        seed=tc.seed,
        num_workers=dc.num_workers,
        pin_memory=dc.pin_memory,
        drop_last=True,
    )
    val_loader = None
    if len(val_rows):
        val_loader = build_dataloader(
            dataset(val_rows, train=False),
            tc.batch_size,
            shuffle=False,
            num_workers=dc.num_workers,
            pin_memory=dc.pin_memory,
        )
    accelerator.print(
        f"data: {len(train_rows)} training specimens ({', '.join(cfg.data.splits.train)}), "
        f"{len(val_rows)} validation ({', '.join(cfg.data.splits.val_seen)}); modalities {', '.join(model.modalities)}"
    )
    augment = None
    if train.image_size is not None and dc.augment.enabled and dc.augment.on_device:
        augment = BatchAugment(cfg.model.image.image_size, dc.augment, dc.mean, dc.std)
    return TrainingData(model, train, train_loader, val_loader, trainable_parameters(model), augment)
