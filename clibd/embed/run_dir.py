"""A trained run's folder: the checkpoint hash that embeddings and libraries are keyed by,
and the run's ``config.yaml`` (image normalisation and view) found beside or above a checkpoint."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from clibd.atomic import chained_sha256
from clibd.config import DataConfig, load_config


def checkpoint_hash(checkpoint_dir: str | Path) -> str:
    """sha256 (first 16 hex) of the checkpoint's weights and config: what embeddings depend on."""
    if not Path(checkpoint_dir).is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {checkpoint_dir}")
    paths = [Path(checkpoint_dir) / name for name in ("config.json", "model.safetensors")]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint_dir} has no {path.name}")
    return chained_sha256(paths)[:16]


def find_run_config(checkpoint_dir: str | Path) -> Optional[Path]:
    """The run's ``config.yaml`` in the checkpoint folder or up to three folders above it
    (``python train.py`` writes OUT/config.yaml, OUT/model and OUT/checkpoints/<name>/model)."""
    folder = Path(checkpoint_dir).resolve()
    for candidate in (folder, *list(folder.parents)[:3]):
        if (candidate / "config.yaml").is_file():
            return candidate / "config.yaml"
    return None


def run_normalisation(
    checkpoint_dir: Path, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]
) -> tuple[Sequence[float], Sequence[float]]:
    """The image mean/std: those given, else the checkpoint's ``config.json`` image_normalization,
    else the run's ``config.yaml`` data.mean/std, else the BIOSCAN-5M defaults (with a warning)."""
    config_json = Path(checkpoint_dir) / "config.json"
    saved = json.loads(config_json.read_text()).get("image_normalization") if config_json.is_file() else None
    if saved:
        return mean or saved["mean"], std or saved["std"]
    found = find_run_config(checkpoint_dir)
    if found is not None:
        data = load_config(found).data
        return mean or data.mean, std or data.std
    warnings.warn(
        f"no run config.yaml at or above {checkpoint_dir}: normalising images with the BIOSCAN-5M "
        "mean/std defaults; pass mean= and std= if the model was trained with others",
        stacklevel=3,
    )
    return mean or DataConfig().mean, std or DataConfig().std


def run_image_view(checkpoint_dir: Path, saved: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The evaluation view new specimens get, ``{"eval_resize": ..., "pipeline": ...}``: ``saved``
    (the model's config.json ``image_view``), else the run's ``config.yaml`` (``data.eval_resize``,
    ``data.image_pipeline``), else resize to the crop with clibd's pipeline."""
    if saved:
        return {"eval_resize": saved.get("eval_resize"), "pipeline": saved.get("pipeline", "clibd")}
    found = find_run_config(checkpoint_dir)
    data = load_config(found).data if found is not None else DataConfig()
    return {"eval_resize": data.eval_resize, "pipeline": data.image_pipeline}
