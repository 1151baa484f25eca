"""A full output folder (an unwritable one failing at start-up: tests/test_training.py):
training fails at the failing write with an error naming the checkpoint and the room left; the partial copy is
removed, the previous checkpoint stays the latest, and a resume elsewhere continues as if nothing happened.

The full disk is real (a tmpfs too small for two checkpoints, when this machine lets the
test mount one) or simulated (the k-th ``torch.save`` raising ENOSPC)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from clibd.models.clibd_model import CLIBDModel
from clibd.train.checkpoint import STATE_FILE, CheckpointError, resolve_checkpoint
from clibd.train.loop import train
from tests.helpers.tiny_run import logged, tiny_config

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(180)]

EVERY_STEP = "train.checkpoint_every_steps=1"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 9 MiB tmpfs: room for the logs and one checkpoint of the tiny model (~5 MB), not two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=9m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root in a privileged container): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _assert_left_behind(out: Path, step: int) -> None:
    """Only complete checkpoints: the one of ``step`` is the latest and loads; no partial copy."""
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last"], "a partial checkpoint was left"
    latest = resolve_checkpoint(out, "latest")
    assert json.loads((latest / STATE_FILE).read_text())["step"] == step
    CLIBDModel.from_pretrained(latest / "model")


def _resume_elsewhere_matches(data, out: Path, tmp_path: Path, finished_run: Path) -> None:
    """Moved to a roomy disk, the run resumes and its losses equal an uninterrupted run's."""
    moved = Path(shutil.copytree(out, tmp_path / "moved"))
    train(tiny_config(data), moved, resume="latest")
    reference, resumed = logged(finished_run), logged(moved)
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


def test_full_tmpfs_fails_at_the_checkpoint_write_and_keeps_the_previous_one(
    data, tiny_disk, tmp_path, finished_run
) -> None:
    out = tiny_disk / "run"
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*/checkpoints/last \(0 bytes free there\)"):
        train(tiny_config(data, EVERY_STEP), out)
    _assert_left_behind(out, step=1)
    _resume_elsewhere_matches(data, out, tmp_path, finished_run)


def test_enospc_on_a_checkpoint_file_fails_naming_it_and_keeps_the_previous_one(
    data, tmp_path, monkeypatch, finished_run
) -> None:
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # the second checkpoint's second pickle (optimizer, scheduler, RNG each)
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    with pytest.raises(
        CheckpointError, match=r"checkpoints/last \(.* bytes free there\): .*No space left on device: .*\.last\.tmp/"
    ):
        train(tiny_config(data, EVERY_STEP), out)
    monkeypatch.setattr(torch, "save", real_save)
    _assert_left_behind(out, step=1)
    _resume_elsewhere_matches(data, out, tmp_path, finished_run)
