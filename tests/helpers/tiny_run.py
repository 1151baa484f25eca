"""The tiny training run many tests share: a config over the learnable specimens (tiny towers,
16-row batches, 2 epochs of 4 steps) and a reader of the run's step log."""

from __future__ import annotations

import json
from pathlib import Path

from clibd.config import Config, load_config


def tiny_config(data: dict[str, Path], *overrides: str) -> Config:
    """``data``: the ``learnable`` fixture of tests/conftest.py (csv, text model, cache folder)."""
    base = [
        "data.format=tabular", f"data.root={data['csv']}", f"data.cache_dir={data['cache']}",
        "data.num_workers=0", "data.augment.enabled=false",
        "model.embed_dim=32", "model.image.name=test_vit", "model.image.image_size=32",
        "model.dna.k=4", "model.dna.max_nucleotides=120", "model.dna.hidden_size=32", "model.dna.num_layers=1",
        "model.dna.num_heads=2", "model.dna.intermediate_size=64",
        f"model.text.name={data['text']}",
        "train.batch_size=16", "train.epochs=2", "train.lr=1e-3", "train.lr_reference_batch=0",
        "train.log_every_steps=1", "train.trackers=[]",
    ]  # fmt: skip
    return load_config(None, base + list(overrides))


def logged(out: Path) -> dict[int, float]:
    """Step -> loss of OUT/train_log.jsonl, checking that no step is logged twice or out of order."""
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"steps logged out of order or twice: {steps}"
    return {r["step"]: r["loss"] for r in records}
