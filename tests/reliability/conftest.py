"""Shared by the reliability group: a finished 8-step tiny run (checkpoints every 2 steps) that
fault scenarios copy and damage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clibd.train.loop import train
from tests.helpers.tiny_run import tiny_config


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    result = train(tiny_config(data, "train.checkpoint_every_steps=2"), out)
    assert result.steps == 8 and not result.interrupted
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy of the finished run to damage."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))
