"""The optimiser, its parameter groups, the learning-rate schedule and its scaling with the
global batch: shared by contrastive training and DNA pretraining (``OptimConfig``)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from transformers import get_cosine_schedule_with_warmup

from clibd.config import MODALITIES, ModelConfig, OptimConfig


def param_groups(
    model: torch.nn.Module,
    weight_decay: float,
    decay_all: bool = False,
    lr_scales: Optional[Mapping[str, float]] = None,
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters. ``decay_all``: one group, every parameter
    decayed (the published recipe); else no weight decay on norms, biases (every tensor under
    2-D) and the logit scale. ``lr_scales`` maps a parameter-name prefix (``towers.dna.``) to a
    learning-rate multiplier: those parameters get groups of their own with ``lr_scale`` set
    (every group carries it; ``build_optimizer`` applies it)."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    if not decay_all:  # both groups exist even when one is empty, in this order
        groups[(weight_decay, 1.0)], groups[(0.0, 1.0)] = [], []
    for name, p in trainable:
        decay = weight_decay if decay_all or not (p.ndim < 2 or "logit_scale" in name) else 0.0
        scale = next((s for prefix, s in (lr_scales or {}).items() if name.startswith(prefix)), 1.0)
        groups.setdefault((decay, scale), []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr_scale": scale} for (wd, scale), ps in groups.items()]


def tower_lr_scales(cfg: ModelConfig) -> dict[str, float]:
    """``model.<tower>.lr_scale`` as ``param_groups`` prefixes of CLIBDModel (the tower and its head)."""
    scales = {}
    for name in MODALITIES:
        scale = getattr(cfg, name).lr_scale
        if scale != 1.0:
            scales |= {f"towers.{name}.": scale, f"heads.{name}.": scale}
    return scales


def build_optimizer(
    model: torch.nn.Module, cfg: OptimConfig, lr: float, lr_scales: Optional[Mapping[str, float]] = None
) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_all_params, lr_scales)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    # fused: one kernel for all tensors; the default is a per-tensor loop on the CPU (bench/train_step.py).
    return torch.optim.AdamW(groups, lr=lr, fused=True)


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
