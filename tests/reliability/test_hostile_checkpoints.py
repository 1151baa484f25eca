"""Checkpoints from elsewhere: a resumed training checkpoint or a saved model that is
hostile (a pickle that runs code), tampered with (truncated, garbage header) or incomplete
(a file missing) is refused with an error naming the file, and nothing in it runs; so is a
reference index with a truncated file (its dim / checkpoint-hash refusals: tests/test_retrieval.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from clibd.index.faiss_index import ReferenceIndex
from clibd.models.clibd_model import CLIBDModel
from clibd.models.weights import CheckpointMismatchError, UnsafeCheckpointError
from clibd.train.checkpoint import CheckpointError
from clibd.train.loop import train
from tests.helpers.tiny_run import tiny_config

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]


class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32  # the JSON header right after its 8-byte length
    path.write_bytes(bytes(data))


# accelerate unpickles registered objects (the LR scheduler) with weights_only=False, and
# silently skips RNG states it cannot read: both must be refused before it gets to them.
@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_resume_refuses_a_code_running_pickle_and_never_runs_it(data, run_copy, tmp_path, name: str) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state": _Payload(str(marker))}, run_copy / "checkpoints" / "last" / name)
    with pytest.raises(UnsafeCheckpointError, match=rf"last/{name}: refused to load"):
        train(tiny_config(data, "train.checkpoint_every_steps=2"), run_copy, resume="latest")
    assert not marker.exists()


@pytest.mark.parametrize("damage", [_truncate, _garble_header])
def test_resume_refuses_tampered_weights_naming_the_file(data, run_copy, damage) -> None:
    damage(run_copy / "checkpoints" / "last" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"last/model.safetensors: cannot be read"):
        train(tiny_config(data, "train.checkpoint_every_steps=2"), run_copy, resume="latest")


@pytest.mark.parametrize(
    "name", ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"]
)
def test_resume_refuses_a_checkpoint_with_a_missing_file(data, run_copy, name: str) -> None:
    (run_copy / "checkpoints" / "last" / name).unlink()
    with pytest.raises(CheckpointError, match=rf"last is incomplete: no {name}"):
        train(tiny_config(data, "train.checkpoint_every_steps=2"), run_copy, resume="latest")


def test_resume_refuses_a_corrupt_trainer_state(data, run_copy) -> None:
    (run_copy / "checkpoints" / "last" / "trainer_state.json").write_text('{"epoch": 1, "st')
    with pytest.raises(CheckpointError, match=r"last/trainer_state.json: cannot be read"):
        train(tiny_config(data, "train.checkpoint_every_steps=2"), run_copy, resume="latest")


@pytest.mark.parametrize("damage", [_truncate, _garble_header])
def test_saved_model_with_tampered_weights_is_refused_naming_the_file(run_copy, damage) -> None:
    damage(run_copy / "model" / "model.safetensors")
    with pytest.raises(ValueError, match=r"model/model.safetensors: cannot be read"):
        CLIBDModel.from_pretrained(run_copy / "model")


def test_saved_model_with_missing_files_is_refused_naming_them(run_copy) -> None:
    (run_copy / "model" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model/model.safetensors"):
        CLIBDModel.from_pretrained(run_copy / "model")
    (run_copy / "model" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"not a saved CLIBD model \(no config.json\)"):
        CLIBDModel.from_pretrained(run_copy / "model")


def test_saved_model_with_another_vocabulary_or_embedding_is_refused_naming_the_fields(data, finished_run) -> None:
    expected = tiny_config(data, "model.embed_dim=48", "model.dna.k=5").model
    with pytest.raises(CheckpointMismatchError) as err:
        CLIBDModel.from_pretrained(finished_run / "model", expected=expected)
    assert "embed_dim found=32 expected=48" in str(err.value) and "dna.k found=4 expected=5" in str(err.value)
    saved = json.loads((finished_run / "model" / "config.json").read_text())
    assert saved["model"]["embed_dim"] == 32  # the refusal compared the real saved config


@pytest.mark.parametrize("name", ["index.faiss", "keys.parquet", "meta.json"])
def test_reference_index_with_a_truncated_file_is_refused_naming_it(tmp_path, name: str) -> None:
    index = ReferenceIndex(4, device="cpu", checkpoint_hash="model-A")
    index.add(np.eye(4), list("abcd"))
    index.save(tmp_path / "ref")
    _truncate(tmp_path / "ref" / name)
    with pytest.raises(ValueError, match=rf"/ref/{re.escape(name)}: cannot be read"):
        ReferenceIndex.load(tmp_path / "ref", expected_dim=4, expected_checkpoint_hash="model-A")
