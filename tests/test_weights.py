"""Weight files load through safetensors or weights-only torch.load; pickles that run code are refused."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from clibd.config import DnaTowerConfig, ModelConfig
from clibd.models.clibd_model import CLIBDModel
from clibd.models.dna import DnaTower
from clibd.models.weights import UnsafeCheckpointError, load_state_dict
from tests.helpers.tiny_checkpoint import tiny_mlm


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
    cfg = DnaTowerConfig(
        k=3,
        max_nucleotides=30,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        pretrained=str(tmp_path / "barcodebert.pt"),
    )
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


# ---- BarcodeBERT as released ---------------------------------------------------------------


@pytest.mark.parametrize("prefixes", ["module.", "module.bert_only", "bert."])
def test_barcodebert_v1_state_dict_with_ddp_prefix_loads(tmp_path, prefixes) -> None:
    """BarcodeBERT v1 was saved from a DDP-wrapped BertForMaskedLM: keys ``module.bert.*``, ``module.cls.*``,
    sometimes with the old ``position_ids`` buffer, sometimes inside {"model": ..., "bert_config": ...}."""
    mlm = tiny_mlm(3 + 4**3)
    state = mlm.state_dict()
    state["bert.embeddings.position_ids"] = torch.arange(512)[None]
    if prefixes == "module.bert_only":
        state = {k: v for k, v in state.items() if k.startswith("bert.")}
    prefix = "" if prefixes == "bert." else "module."
    torch.save(
        {"model": {prefix + k: v for k, v in state.items()}, "bert_config": {"vocab_size": 67}},
        tmp_path / "model_41.pth",
    )
    cfg = DnaTowerConfig(
        k=3,
        vocab="barcodebert_v1",
        max_nucleotides=30,
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        intermediate_size=32,
        pretrained=str(tmp_path / "model_41.pth"),
    )
    tower = DnaTower(cfg)
    for name, value in tower.backbone.state_dict().items():
        torch.testing.assert_close(value, mlm.bert.state_dict()[name], rtol=0, atol=0)


def test_hub_layout_selects_its_tokenizer(tmp_path) -> None:
    """bioscan-ml/BarcodeBERT on the hub: config.json + weights + tokenizer_config.json with the
    KmerTokenizer arguments (k=4, stride=4, max_len=660), vocabulary [MASK], [UNK], k-mers, no prefix."""
    mlm = tiny_mlm(2 + 4**4)
    hub = tmp_path / "BarcodeBERT"
    mlm.save_pretrained(hub)
    (hub / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "k": 4,
                "stride": 4,
                "max_len": 660,
                "tokenizer_class": "KmerTokenizer",
                "auto_map": {"AutoTokenizer": ["tokenizer.KmerTokenizer", None]},
            }
        )
    )
    # Our defaults (k=5, max 660, barcodebert) but the sizes of the tiny checkpoint.
    cfg = ModelConfig(
        embed_dim=8,
        dna=DnaTowerConfig(
            hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, pretrained=str(hub), max_nucleotides=600
        ),
    )
    cfg.image.enabled = cfg.text.enabled = False
    with pytest.warns(UserWarning, match=r"model.dna.k: 5 -> 4, as the checkpoint .*BarcodeBERT declares"):
        model = CLIBDModel(cfg)
    tok = model.dna_tokenizer
    assert tok.settings() == {
        "k": 4, "stride": 4, "vocab": "barcodebert", "max_nucleotides": 660, "prefix_id": None, "cleaning": "clibd"
    }  # fmt: skip
    # [MASK]=0 [UNK]=1, AAAA=2, ACGT = 0*64+1*16+2*4+3 = 27 -> 29; the 2nd k-mer has an N -> UNK.
    enc = tok(["ACGTAANA"])
    assert enc.ids[0, :3].tolist() == [29, 1, 1] and enc.ids.shape == (1, 165)
    assert enc.attention_mask[0, :3].tolist() == [1, 1, 0]
    model.save_pretrained(tmp_path / "clibd")
    assert CLIBDModel.from_pretrained(tmp_path / "clibd").dna_tokenizer.settings() == tok.settings()
