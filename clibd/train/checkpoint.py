"""Training checkpoints that a kill at any moment cannot corrupt.

A checkpoint is a directory: accelerate's state (model, optimizer, scheduler, RNG states of
every process), the model as ``CLIBDModel.save_pretrained`` under ``model/``, and
``trainer_state.json`` (step, epoch, position in the epoch), written last. Every rank writes
its files into a temporary sibling, then the main process commits it (``clibd.atomic``): the
previous copy is moved to ``<name>.old`` for the instant between the two renames, so one
complete checkpoint exists at every moment (``resolve_checkpoint`` falls back to ``.old``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from accelerate import Accelerator
from accelerate.utils import load
from safetensors import SafetensorError

from clibd.atomic import commit_directory, previous_copy, temporary_sibling
from clibd.models.weights import refuse_unsafe_pickle

STATE_FILE = "trainer_state.json"
MODEL_DIR = "model"


@dataclass
class TrainerState:
    epoch: int = 0
    step: int = 0  # optimizer steps done
    batch_in_epoch: int = 0  # micro-batches of ``epoch`` already consumed
    skipped_nonfinite: int = 0
    best: Optional[float] = None  # best value of train.best_metric so far


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one could not be written."""


def is_complete(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / MODEL_DIR).is_dir()


def save_checkpoint(accelerator: Accelerator, model, path: Path, state: TrainerState) -> None:
    """Write ``path`` atomically. Called on every process (accelerate saves per-rank RNG)."""
    tmp = temporary_sibling(path)
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # left by a run killed while writing
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(tmp / MODEL_DIR)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
            commit_directory(tmp, path)
    except (OSError, RuntimeError, SafetensorError) as err:
        # torch.save reports a full disk as a RuntimeError ("unexpected pos ..."): say how
        # much room is left, and drop the partial copy so it does not hold on to the space.
        free = shutil.disk_usage(path.parent).free
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {path} ({free:,} bytes free there): {err}") from err
    accelerator.wait_for_everyone()


def resolve_checkpoint(out_dir: Path, resume: str) -> Path:
    """``latest`` -> OUT/checkpoints/last (or its ``.old`` twin after a kill mid-swap); else a path."""
    if resume != "latest":
        path = Path(resume)
        if not is_complete(path):
            raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE} or {MODEL_DIR}/)")
        return path
    last = out_dir / "checkpoints" / "last"
    for candidate in (last, previous_copy(last)):
        if is_complete(candidate):
            return candidate
    raise CheckpointError(f"--resume latest: no complete checkpoint under {last.parent}")


def _refuse_unreadable_files(accelerator: Accelerator, path: Path) -> None:
    """Check what accelerate would read carelessly: it unpickles registered objects (the LR
    scheduler) with ``weights_only=False``, so a posted checkpoint could run code, and it
    silently skips RNG states it cannot read, so a resume would quietly diverge."""
    required = (
        "model.safetensors",
        "optimizer.bin",
        f"random_states_{accelerator.process_index}.pkl",
        "custom_checkpoint_0.pkl",
    )
    for name in required:
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: no {name}")
    for pickled in sorted([*path.glob("*.pkl"), *path.glob("*.pt")]):  # small; optimizer.bin: below
        with refuse_unsafe_pickle(pickled):
            load(pickled, map_location="cpu")


def load_checkpoint(accelerator: Accelerator, path: Path) -> TrainerState:
    _refuse_unreadable_files(accelerator, path)
    try:
        with refuse_unsafe_pickle(path / "optimizer.bin"):  # accelerate reads it weights-only
            accelerator.load_state(str(path))
    except SafetensorError as err:
        raise CheckpointError(f"{path / 'model.safetensors'}: cannot be read ({err})") from None
    try:
        return TrainerState(**json.loads((path / STATE_FILE).read_text()))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path / STATE_FILE}: cannot be read ({err})") from None
