"""The visual tower of an open_clip model (``image.backbone: open_clip``; BioCLIP). Its own module:
open_clip imports transformers, timm and torchvision, so it is loaded through ``clibd.models.registry``
only for this backbone."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional

import open_clip
from open_clip.factory import _get_hf_config
from open_clip.model import _build_vision_tower
from torch import nn

from clibd.config import ImageTowerConfig
from clibd.models.weights import refuse_unsafe_pickle


def _open_clip_source(cfg: ImageTowerConfig) -> tuple[str, Optional[str], dict]:
    """(model name for open_clip.create_model, its ``pretrained`` argument, model_cfg)."""
    name, source = cfg.name, cfg.pretrained
    if source and (source.startswith("hf-hub:") or Path(source).is_dir()):
        name, source = (source if source.startswith("hf-hub:") else f"local-dir:{source}"), None
    if name.startswith("hf-hub:"):
        model_cfg = _get_hf_config(name.removeprefix("hf-hub:"))["model_cfg"]
    elif name.startswith("local-dir:"):
        model_cfg = json.loads((Path(name.removeprefix("local-dir:")) / "open_clip_config.json").read_text())[
            "model_cfg"
        ]
    else:
        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None:
            raise ValueError(f"image.name={name!r} is not an open_clip model (see open_clip.list_models())")
    return name, source, copy.deepcopy(model_cfg)


def build_open_clip(cfg: ImageTowerConfig) -> tuple[nn.Module, dict]:
    name, source, model_cfg = _open_clip_source(cfg)
    with refuse_unsafe_pickle(source or name):
        model = open_clip.create_model(name, pretrained=source, force_image_size=cfg.image_size)
    model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    return model.visual, model_cfg


def open_clip_visual_from_cfg(model_cfg: dict) -> nn.Module:
    """The visual tower alone, random init, from an open_clip ``model_cfg``."""
    return _build_vision_tower(
        model_cfg["embed_dim"], dict(model_cfg["vision_cfg"]), model_cfg.get("quick_gelu", False)
    )


def build_visual(cfg: ImageTowerConfig, arch: Optional[dict]) -> tuple[nn.Module, dict]:
    """(visual tower, its open_clip ``model_cfg``): as configured, or rebuilt with random init from
    the ``arch`` a saved model records."""
    if arch is None:
        return build_open_clip(cfg)
    return open_clip_visual_from_cfg(arch["model_cfg"]), arch["model_cfg"]
