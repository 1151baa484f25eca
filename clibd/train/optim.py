"""The optimiser's parameter groups, the learning-rate schedule and its scaling with the
global batch: shared by contrastive training and DNA pretraining."""

from __future__ import annotations

from typing import Any

import torch
from transformers import get_cosine_schedule_with_warmup

from clibd.config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on norms, biases (every tensor under 2-D) and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    warmup = max(1, round(cfg.warmup_fraction * total_steps))
    if cfg.schedule == "onecycle":
        if total_steps < 3:  # OneCycle needs at least one step of warm-up and one of annealing
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=min(max(cfg.warmup_fraction, 1.5 / total_steps), 0.5),
            anneal_strategy="cos",
        )
    if cfg.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    raise ValueError(f"train.schedule must be onecycle or cosine, got {cfg.schedule!r}")


def scaled_lr(cfg: TrainConfig, num_processes: int) -> float:
    if cfg.lr_reference_batch <= 0:
        return cfg.lr
    return cfg.lr * cfg.batch_size * num_processes * cfg.grad_accum / cfg.lr_reference_batch
