"""The run's step log, OUT/train_log.jsonl (one JSON line per logged step), and the flat
hyperparameters the trackers record."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from clibd.config import Config


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except ValueError:
        return math.inf  # half a line, written when a kill or a full disk cut the append short


def truncate_log(log_path: Path, last_step: int) -> None:
    """Keep the log lines up to ``last_step`` (those a resumed run does not repeat); 0 = a fresh log."""
    if not log_path.is_file():
        return
    kept = [line for line in log_path.read_text().splitlines(keepends=True) if _logged_step(line) <= last_step]
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(log_path)


def append_record(log_path: Path, record: dict[str, Any]) -> None:
    with log_path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def hyperparameters(cfg: Config) -> dict[str, Any]:
    """The config flattened to ``{"train.lr": 5e-05, ...}`` with scalar values (lists as strings),
    what TensorBoard's hparams view takes."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else key)
        else:
            flat[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(dataclasses.asdict(cfg), "")
    return flat
