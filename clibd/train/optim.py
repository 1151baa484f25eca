"""The optimiser, its parameter groups, the learning-rate schedule and its scaling with the
global batch: shared by contrastive training and DNA pretraining (``OptimConfig``)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import get_cosine_schedule_with_warmup

from clibd.config import OptimConfig


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters. ``decay_all``: one group, every parameter
    decayed (the published recipe); else no weight decay on norms, biases (every tensor under
    2-D) and the logit scale."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if decay_all:
        return [{"params": [p for _, p in trainable], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for name, p in trainable:
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.AdamW:
    # fused: one kernel for all tensors; the default is a per-tensor loop on the CPU (bench/train_step.py).
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.decay_all_params), lr=lr, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """OneCycle (cosine annealing; beta1 cycled 0.95 -> 0.85 -> 0.95 when ``cycle_momentum``)
    or linear warm-up + cosine decay; stepped once per optimiser step."""
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
            cycle_momentum=cfg.cycle_momentum,
        )
    return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)


def scaled_lr(cfg: OptimConfig, num_processes: int) -> float:
    """``cfg.lr`` x global batch / ``lr_reference_batch`` (0 = unscaled)."""
    if cfg.lr_reference_batch <= 0:
        return cfg.lr
    return cfg.lr * cfg.batch_size * num_processes * cfg.grad_accum / cfg.lr_reference_batch
