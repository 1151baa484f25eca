"""Weight files load through safetensors or weights-only torch.load; pickles that run code are refused."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from clibd.config import DnaTowerConfig
from clibd.models.dna import DnaTower
from clibd.models.weights import UnsafeCheckpointError, load_state_dict


class _Payload:
    """Unpickling this creates ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2, 3])}


def test_safetensors_round_trip(tmp_path, tensors) -> None:
    save_file(tensors, tmp_path / "w.safetensors")
    loaded = load_state_dict(tmp_path / "w.safetensors")
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_torch_file_round_trip_and_unwrap(tmp_path, tensors, wrapper) -> None:
    torch.save(tensors if wrapper is None else {wrapper: tensors, "epoch": 3}, tmp_path / "w.pt")
    loaded = load_state_dict(tmp_path / "w.pt")
    assert loaded.keys() == tensors.keys() and torch.equal(loaded["a.weight"], tensors["a.weight"])


@pytest.mark.parametrize("writer", ["torch_zip", "raw_pickle"])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, tensors, writer) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    payload = {**tensors, "x": _Payload(str(marker))}
    if writer == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafeCheckpointError, match="evil.bin.*refused"):
        load_state_dict(path)
    assert not marker.exists()


def test_dna_tower_refuses_hostile_checkpoint(tmp_path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"bert.embeddings.word_embeddings.weight": _Payload(str(marker))}, tmp_path / "barcodebert.pt")
    cfg = DnaTowerConfig(k=3, max_nucleotides=30, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                         pretrained=str(tmp_path / "barcodebert.pt"))
    with pytest.raises(UnsafeCheckpointError, match="barcodebert.pt"):
        DnaTower(cfg)
    assert not marker.exists()


def test_non_tensor_entries_and_missing_file_are_named(tmp_path) -> None:
    torch.save({"w": torch.ones(1), "note": "hello"}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"odd.pt: not a state dict: entries \['note'\]"):
        load_state_dict(tmp_path / "odd.pt")
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_state_dict(tmp_path / "nothere.pt")


def test_the_payload_really_runs_code_when_unpickled_naively(tmp_path) -> None:
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(str(marker))))
    assert marker.exists()  # so the refusals above are what keeps the marker away
