"""LoRA adapters from peft (``inject_adapter_in_model``: the tower keeps its class and forward;
everything but the adapters is frozen). Its own module because peft imports transformers, and
through it torch._dynamo and torchvision: loaded through ``clibd.models.registry`` only when a
tower is configured with ``finetune: lora``."""

from __future__ import annotations

from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model
from torch import nn

from clibd.config import LoraConfig


def inject_lora(tower: nn.Module, lora: LoraConfig, default_targets: list[str], where: str) -> None:
    """Wrap ``tower.backbone``'s target modules (``lora.targets``, else ``default_targets``) in adapters."""
    targets = list(lora.targets) or default_targets
    config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)
    try:
        tower.backbone = inject_adapter_in_model(config, tower.backbone)
    except ValueError as err:
        raise ValueError(f"{where}.lora.targets={targets}: {err}") from None
