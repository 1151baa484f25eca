"""Safe weight loading: safetensors, or ``torch.load(weights_only=True)``, nothing else.

A pickle can run arbitrary code when it is unpickled; a checkpoint someone posted must
never get that chance, so every weight file that clibd reads comes through here (or
through a third-party loader wrapped in :func:`refuse_unsafe_pickle`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file

# Keys under which training scripts commonly nest the weights.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
# Weight files looked for in a checkpoint directory (timm / HF / BarcodeBERT layouts), in order.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


class UnsafeCheckpointError(ValueError):
    """A weight file that could run code when loaded (a pickle beyond plain tensors)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose shapes or settings do not fit the configured model."""


def mismatch_message(source: str | os.PathLike, what: str, diffs: dict[str, tuple[Any, Any]]) -> str:
    """``source: <what> does not match: field found=x expected=y; ...`` for every differing field."""
    fields = "; ".join(f"{name} found={found!r} expected={expected!r}" for name, (found, expected) in diffs.items())
    return f"{source}: {what} does not match: {fields}"


@contextlib.contextmanager
def refuse_unsafe_pickle(path: str | os.PathLike) -> Iterator[None]:
    """Turn the weights-only unpickler's refusal inside a library loader into our error."""
    try:
        yield
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the file is a pickle holding more than tensors "
            f"(it could run code when unpickled). Convert it to safetensors from a trusted "
            f"source. Loader said: {str(err).splitlines()[0]}"
        ) from None


def find_weights_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` itself when it is a file, else the first of ``WEIGHT_FILES`` in that directory."""
    path = Path(path)
    if path.is_file():
        return path
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: no {what} weights file ({', '.join(WEIGHT_FILES)}) in this directory")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a weights-only torch pickle (``.pt/.pth/.bin``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    with refuse_unsafe_pickle(path):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: not a state dict: entries {bad[:5]} are not tensors")
    return obj
