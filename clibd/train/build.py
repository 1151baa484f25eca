"""Everything a training run works with, built once before the loop: the specimen table, the
model and the train / validation loaders (the demo data generated first when the config asks
for it), then the accelerator, optimiser, schedule and loss (``build_run``), and the state to
start or resume from (``start_state``)."""

from __future__ import annotations

import math
import shutil
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import torch
from accelerate import Accelerator, DataLoaderConfiguration, InitProcessGroupKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from clibd.config import Config, save_config
from clibd.data.bad_records import SkipReport
from clibd.data.dataset import SpecimenDataset, build_dataloader
from clibd.data.demo import ensure_demo
from clibd.data.gpu_augment import BatchAugment
from clibd.data.roles import select_role
from clibd.data.sources import read_specimens
from clibd.data.species_split import AUTO, SPLIT_FILE, write_split_file
from clibd.models.clibd_model import CLIBDModel
from clibd.models.finetune import trainable_parameters
from clibd.models.text import build_text_tokenizer
from clibd.taxonomy import EVAL_RANKS, taxonomy_text
from clibd.train.checkpoint import MODEL_DIR, CheckpointError, TrainerState, load_checkpoint
from clibd.train.loss import ContrastiveLoss
from clibd.train.optim import build_optimizer, build_scheduler, scaled_lr, tower_lr_scales
from clibd.train.pretrain_dna.barcodes import unique_barcodes
from clibd.train.pretrain_dna.spectral import fit_table
from clibd.train.run_log import hyperparameters, truncate_log


@dataclass
class TrainingData:
    table: pd.DataFrame  # the whole specimen table, read once (validation retrieval reuses it)
    skips: SkipReport
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
    init_range, weights = tower.backbone.config.initializer_range, cfg.model.dna.kmer_pattern_weights or None
    fit = fit_table(embeddings, barcodes, tower.tokenizer, cfg.train.seed, init_range, weights)
    print(f"model.dna: k-mer table of rank {fit['rank']} fitted on {len(barcodes)} training barcodes (no labels)")


def build_model(cfg: Config, train_rows, model_dir: Optional[Path]) -> CLIBDModel:
    """A fresh model, or the one saved in a checkpoint (its text vocabulary included)."""
    if model_dir is not None:
        model = CLIBDModel.from_pretrained(model_dir, expected=cfg.model)
        record_inputs(model, cfg)
        return model
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
    record_inputs(model, cfg)
    if dna.enabled and dna.init == "kmer_spectral":
        fit_dna_table(model, cfg, train_rows)
    return model


def record_inputs(model: CLIBDModel, cfg: Config) -> None:
    """What ``cfg.data`` does to images and barcodes, kept in the model (saved in config.json), so the
    Embedder, ``clibd index`` and ``clibd classify`` prepare new specimens as training did."""
    if model.dna_tokenizer is not None:
        model.dna_tokenizer.cleaning = cfg.data.dna_cleaning
    if "image" in model.modalities:
        model.image_normalization = {"mean": list(cfg.data.mean), "std": list(cfg.data.std)}
        model.image_view = {"eval_resize": cfg.data.eval_resize, "pipeline": cfg.data.image_pipeline}


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
    return TrainingData(table, skips, model, train, train_loader, val_loader, trainable_parameters(model), augment)


@dataclass
class Run:
    """What the loop works with, built once by :func:`build_run`."""

    cfg: Config
    accelerator: Accelerator
    data: TrainingData
    model: torch.nn.Module  # as prepared by accelerate (DDP-wrapped under a multi-process launch)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    val_loader: Any
    loss_fn: ContrastiveLoss
    total_steps: int
    out_dir: Path

    @property
    def unwrapped(self) -> CLIBDModel:
        return self.accelerator.unwrap_model(self.model)

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "train_log.jsonl"

    def labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The label columns the loss reads: every rank for hierarchical targets, else ``train.label_rank``."""
        if self.cfg.train.loss_targets == "hierarchical":
            return batch["labels"]
        return batch["labels"][:, EVAL_RANKS.index(self.cfg.train.label_rank)]


def check_writable(out_dir: Path) -> None:
    """Fail at start-up, not after hours of training, when OUT cannot hold checkpoints."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write_probe-{uuid.uuid4().hex[:8]}"  # every rank probes at once
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(f"output directory {out_dir} is not writable: {err}") from err


def build_accelerator(cfg: Config, out_dir: Path) -> Accelerator:
    tc = cfg.train
    return Accelerator(
        # Without a GPU, processes started by torchrun (`accelerate launch --multi_gpu`)
        # join one gloo group only when accelerate is told to run on the CPU.
        cpu=not torch.accelerator.is_available(),
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.grad_accum,
        log_with=list(tc.trackers) or None,
        project_dir=str(out_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=tc.seed),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=tc.collective_timeout_s))],
    )


def build_run(cfg: Config, out_dir: Path, resume_from: Optional[Path]) -> Run:
    """Data, model, optimiser and schedule, prepared by accelerate. The model is rebuilt from the
    checkpoint on resume so the text vocabulary learned from the data is the one it was trained with."""
    tc = cfg.train
    accelerator = build_accelerator(cfg, out_dir)
    if tc.cpu_threads and accelerator.device.type == "cpu":
        torch.set_num_threads(tc.cpu_threads)
    set_seed(tc.seed)
    data = build_training_data(cfg, accelerator, resume_from / MODEL_DIR if resume_from else None)
    if cfg.data.split == AUTO:  # the run's config names the split it used: its evaluation reads the same rows
        split_file = (out_dir / SPLIT_FILE).resolve()
        if accelerator.is_main_process:
            write_split_file(data.table, out_dir)
        cfg.data.split = str(split_file)
    if accelerator.is_main_process:
        save_config(cfg, out_dir / "config.yaml")
        for tower, (trainable, total) in data.trainable.items():
            accelerator.print(f"trainable parameters {tower}: {trainable:,} / {total:,}")
    lr = scaled_lr(tc, accelerator.num_processes)
    optimizer = build_optimizer(data.model, tc, lr, tower_lr_scales(cfg.model))
    model, optimizer, train_loader = accelerator.prepare(data.model, optimizer, data.train_loader)
    val_loader = accelerator.prepare(data.val_loader) if data.val_loader is not None else None
    steps_per_epoch = math.ceil(len(train_loader) / tc.grad_accum)
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(tc.max_steps, total_steps)
    if total_steps < 1:
        raise ValueError(
            f"nothing to train: {len(data.train_loader.dataset)} training specimens give {len(train_loader)} "
            f"batches of {tc.batch_size} per process; lower train.batch_size or add data"
        )
    # Not prepared: accelerate would step it once per process and overrun OneCycle's total.
    scheduler = build_scheduler(optimizer, tc, total_steps)
    accelerator.register_for_checkpointing(scheduler)
    rank_weights = [tc.rank_weights.get(r, 0.0) for r in EVAL_RANKS]
    loss_fn = ContrastiveLoss(tc.loss_targets, accelerator.process_index, accelerator.num_processes, rank_weights)
    accelerator.print(
        f"training {total_steps} steps ({steps_per_epoch}/epoch) on {accelerator.num_processes} process(es), "
        f"{accelerator.device}, global batch {tc.batch_size * accelerator.num_processes * tc.grad_accum}, "
        f"peak lr {lr:.3g}"
    )
    return Run(
        cfg, accelerator, data, model, optimizer, scheduler, train_loader, val_loader, loss_fn, total_steps, out_dir
    )


def start_state(run: Run, resume_from: Optional[Path]) -> TrainerState:
    """The resumed state, or a fresh one over whatever an earlier run left in OUT."""
    accelerator = run.accelerator
    state = TrainerState()
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from)
        accelerator.print(
            f"resumed from {resume_from} at step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})"
        )
    accelerator.init_trackers("clibd", config=hyperparameters(run.cfg))
    if accelerator.is_main_process:
        if resume_from is None and (run.ckpt_dir / "last").exists():
            accelerator.print(
                f"{run.out_dir} holds an earlier run: starting afresh over it (--resume latest continues it)"
            )
        if resume_from is None:  # an earlier run's best must not become this run's final model
            shutil.rmtree(run.ckpt_dir / "best", ignore_errors=True)
        truncate_log(run.log_path, state.step)
    accelerator.wait_for_everyone()
    return state
