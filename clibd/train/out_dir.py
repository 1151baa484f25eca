"""What ``python train.py --out OUT`` may write over: nothing, an empty folder, or an earlier run
it is told what to do with. A finished or stopped run is never replaced by accident:

- ``--resume latest`` (or a checkpoint) continues it;
- ``--overwrite`` starts afresh, after removing what the earlier run wrote (``RUN_ENTRIES``:
  its config, step log, model, checkpoints, TensorBoard events and ``eval-*`` results), so no
  old file is left beside the new run's;
- neither: refused, saying which run it is (finished, or stopped at step N) and both options.

A folder that holds other things and no run is refused (``--out`` naming a file too). One
writer at a time: ``clibd.atomic.output_lock`` on OUT, taken by the command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from clibd.atomic import OutputError
from clibd.train.checkpoint import MODEL_DIR, STATE_FILE

# What a run writes into OUT (clibd.train.loop; the TensorBoard folder is named after the project).
RUN_ENTRIES = ("config.yaml", "train_log.jsonl", MODEL_DIR, "checkpoints", "clibd")


def run_entries(out: Path) -> list[Path]:
    """The entries of ``out`` an earlier run wrote (``RUN_ENTRIES`` and its ``eval-*`` folders)."""
    return sorted(p for p in out.iterdir() if p.name in RUN_ENTRIES or p.name.startswith("eval-"))


def describe_run(out: Path) -> str:
    """``finished (OUT/model holds its weights)``, ``stopped at step N`` or ``started, no checkpoint``."""
    if (out / MODEL_DIR).is_dir():
        return f"finished: {out / MODEL_DIR} holds its trained model"
    try:
        step = json.loads((out / "checkpoints" / "last" / STATE_FILE).read_text())["step"]
        return f"stopped at step {step}"
    except (OSError, ValueError, KeyError, TypeError):
        return "started, with no checkpoint"


def prepare_out_dir(out: Path, resume: Optional[str], overwrite: bool, main_process: bool = True) -> None:
    """Refuse or clear ``out`` as the module docstring says (only the main process removes files)."""
    if resume and overwrite:
        raise OutputError("--resume continues the run in --out and --overwrite starts afresh over it: give one")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; a training run writes a folder")
    if not out.is_dir() or resume:
        return
    entries = sorted(p for p in out.iterdir() if not p.name.startswith("."))  # not a probe, lock or .DS_Store
    earlier = run_entries(out)
    if entries and not earlier:
        shown = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputError(
            f"--out {out} exists and is not a clibd training run (it holds {shown}); choose a new or empty folder"
        )
    if not earlier:
        return
    if not overwrite:
        raise OutputError(
            f"--out {out} holds an earlier run ({describe_run(out)}): pass --resume latest to continue it, "
            "or --overwrite to start afresh over it (its model, checkpoints and results are removed)"
        )
    if main_process:
        for path in earlier:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
