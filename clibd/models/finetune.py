"""Per-tower fine-tuning mode (full | lora | frozen), gradient checkpointing, parameter counts.

LoRA comes from peft (``clibd.models.lora``, loaded only when a tower asks for it). Default
targets when ``lora.targets`` is empty:
  - timm ViT: ``qkv``. timm fuses the q, k and v projections into one Linear, so the
    published "LoRA on q and v" becomes LoRA on the fused qkv (it adapts k as well); a
    q,v-only adapter would need a custom layer, which we avoid;
  - open_clip ViT: ``attn`` (``nn.MultiheadAttention``; peft adapts its fused in-proj and out-proj);
  - BERT (DNA, text): ``query``, ``value`` as published.
Projection heads and the logit scale live outside the towers and always train.
"""

from __future__ import annotations

from torch import nn

from clibd.config import LoraConfig
from clibd.models.registry import load_part

FINETUNE_MODES = ("full", "lora", "frozen")


def apply_finetune(tower: nn.Module, mode: str, lora: LoraConfig, default_targets: list[str], where: str) -> None:
    """Set ``tower.backbone`` up for ``mode`` in place; ``where`` names the config section in errors."""
    if mode == "full":
        return
    if mode == "frozen":
        tower.backbone.requires_grad_(False)
        return
    if mode != "lora":
        raise ValueError(f"{where}.finetune={mode!r}: choose one of {FINETUNE_MODES}")
    load_part("lora")(tower, lora, default_targets, where)


def trainable_parameters(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{tower: (trainable, total)}`` for each tower (its projection head included) and ``total``.

    ``model`` is a CLIBDModel (``towers`` and ``heads`` ModuleDicts); ``total`` covers every
    parameter, the logit scale included.
    """
    counts: dict[str, tuple[int, int]] = {}
    for name, tower in model.towers.items():
        params = list(tower.parameters()) + list(model.heads[name].parameters())
        counts[name] = (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
    every = list(model.parameters())
    counts["total"] = (sum(p.numel() for p in every if p.requires_grad), sum(p.numel() for p in every))
    return counts
