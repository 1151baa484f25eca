"""Image tower: a timm ViT (pooled CLS token) or the visual tower of an open_clip model
(``clibd.models.open_clip_visual``, imported through ``clibd.models.registry`` only for that backbone).

``cfg.pretrained`` (``ImageTowerConfig``):
  - a local weights file (``.safetensors``, ``.pth``, ``.bin``) or a directory in the
    timm / HF layout (``model.safetensors`` or ``pytorch_model.bin``, + ``config.json``);
    for open_clip, a directory in the open_clip layout (``open_clip_config.json`` + weights);
  - ``hf-hub:<repo>`` (BioCLIP: ``backbone: open_clip``, ``pretrained: hf-hub:imageomics/bioclip``),
    or a pretrained tag of the model (timm ``augreg_in21k``, open_clip ``openai``): network only.
The tower records its architecture (``arch``) so a saved CLIBD model is rebuilt from it
with random init, without the checkpoint that seeded it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import timm
import torch
from torch import nn

from clibd.config import ImageTowerConfig
from clibd.models.registry import load_part
from clibd.models.weights import find_weights_file, load_state_dict


def _check_timm_dir_architecture(path: Path, name: str) -> None:
    config_file = path / "config.json"
    if path.is_dir() and config_file.is_file():
        saved = json.loads(config_file.read_text()).get("architecture")
        if saved and saved.split(".")[0] != name.split(".")[0]:
            raise ValueError(f"{path}: weights are for timm model {saved!r}, but image.name is {name!r}")


def build_timm(cfg: ImageTowerConfig, load_weights: bool) -> nn.Module:
    # num_classes=0 drops the classifier; global_pool="token" makes the output the CLS
    # token, as in the published system, whatever the model's default pooling.
    kwargs: dict[str, Any] = dict(num_classes=0, global_pool="token", img_size=cfg.image_size)
    source = cfg.pretrained if load_weights else None
    if source is None:
        return timm.create_model(cfg.name, pretrained=False, **kwargs)
    if source.startswith("hf-hub:"):
        overlay = {"hf_hub_id": source.removeprefix("hf-hub:"), "source": "hf-hub"}
        return timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    path = Path(source)
    if path.exists():
        _check_timm_dir_architecture(path, cfg.name)
        state_dict = load_state_dict(find_weights_file(path, "image"))
        for classifier in _as_tuple(timm.models.get_pretrained_cfg(cfg.name.split(".")[0]).classifier):
            state_dict.pop(f"{classifier}.weight", None)
            state_dict.pop(f"{classifier}.bias", None)
        # num_classes 0 in the overlay keeps timm's load strict: a key it does not expect
        # or a missing one fails instead of leaving random weights behind.
        overlay = {"state_dict": state_dict, "num_classes": 0}
        return timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    tagged = f"{cfg.name.split('.')[0]}.{source}"
    if not timm.list_pretrained(tagged):
        raise FileNotFoundError(
            f"image.pretrained={source!r} is neither a local file/directory nor a timm pretrained tag of {cfg.name!r}"
        )
    return timm.create_model(tagged, pretrained=True, **kwargs)


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


class ImageTower(nn.Module):
    """``forward(image [B,3,H,W]) -> [B, output_dim]``."""

    def __init__(self, cfg: ImageTowerConfig, arch: Optional[dict] = None) -> None:
        super().__init__()
        self.kind = cfg.backbone
        if cfg.backbone == "timm":
            self.backbone = build_timm(cfg, load_weights=arch is None)
            self.output_dim = self.backbone.num_features
            self.arch: dict = {"backbone": "timm"}
            self.default_lora_targets = ["qkv"]  # timm fuses q, k, v into one Linear
        elif cfg.backbone == "open_clip":
            self.backbone, model_cfg = load_part("open_clip")(cfg, arch)
            self.output_dim = model_cfg["embed_dim"]
            self.arch = {"backbone": "open_clip", "model_cfg": model_cfg}
            self.default_lora_targets = ["attn"]  # nn.MultiheadAttention: fused q,k,v in-proj + out-proj
        else:
            raise ValueError(f"image.backbone={cfg.backbone!r}: choose 'timm' or 'open_clip'")

    def enable_gradient_checkpointing(self) -> None:
        self.backbone.set_grad_checkpointing(True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)
