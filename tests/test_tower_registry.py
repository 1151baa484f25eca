"""Towers built through ``clibd.models.registry``: only the towers asked for (their weights alone
read), others added later (in the background for ``clibd serve``), and a saved bag-only DNA tower
rebuilt without transformers, loading and saving the same weights as the BERT-based tower it was
trained as."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from clibd.atomic import MANIFEST, write_manifest
from clibd.embed.embedder import Embedder
from clibd.models.clibd_model import MANIFEST_KIND, CLIBDModel
from clibd.models.dna import DnaTower
from clibd.models.kmer_bag import KmerBagTower
from tests.helpers.tiny_checkpoint import bag_only_model_cfg, save_run, tiny_model

BARCODES = ["ACGTTGCAAGCTAGCTTACG" * 30, "TTGACCGTAGGCATCGATCA" * 25 + "NNNACGT"]


def _dna_batch(model: CLIBDModel) -> tuple[torch.Tensor, torch.Tensor]:
    encoding = model.dna_tokenizer(BARCODES)
    return torch.from_numpy(encoding.ids.astype(np.int64)), torch.from_numpy(encoding.attention_mask.astype(np.int64))


def test_only_the_asked_towers_are_built_and_embed_as_the_whole_model(tmp_path) -> None:
    whole = tiny_model()  # image, BERT DNA, text
    checkpoint = save_run(tmp_path / "run", whole)
    dna = CLIBDModel.from_pretrained(checkpoint, modalities=("dna",)).eval()
    assert dna.modalities == ("dna",) and dna.left_out == ("image", "text") and dna.text_tokenizer is None
    assert {name.split(".")[0] for name in dna.state_dict()} == {"towers", "heads", "logit_scale"}
    assert all(name.startswith(("towers.dna.", "heads.dna.", "logit_scale")) for name in dna.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(dna.encode_dna(*_dna_batch(dna)), whole.encode_dna(*_dna_batch(whole)))
    with pytest.raises(ValueError, match=r"^the image tower of this model was not loaded \(loaded: dna\)$"):
        dna.encode_image(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"^only the dna tower\(s\) of this model were loaded: load it whole"):
        dna.save_pretrained(tmp_path / "partial")
    assert not (tmp_path / "partial").exists()


def test_a_tower_the_model_lacks_is_named_with_the_enabled_ones(tmp_path) -> None:
    cfg = bag_only_model_cfg()
    cfg.image.enabled = False
    checkpoint = save_run(tmp_path / "run", tiny_model(cfg=cfg))
    model = CLIBDModel.from_pretrained(checkpoint, modalities=("image",))
    assert model.modalities == () and model.left_out == ("dna", "text")
    with pytest.raises(ValueError, match=r"^this model has no image tower \(enabled: dna, text\)$"):
        model.encode_image(torch.zeros(1, 3, 32, 32))


def test_bag_only_tower_loads_without_transformers_and_saves_the_same_weights(tmp_path) -> None:
    trained = tiny_model(cfg=bag_only_model_cfg())
    assert isinstance(trained.towers["dna"], DnaTower)  # built for training: a BertModel with no layers
    first = save_run(tmp_path / "run", trained)
    loaded = CLIBDModel.from_pretrained(first).eval()
    assert type(loaded.towers["dna"]) is KmerBagTower
    with torch.no_grad():
        assert torch.equal(loaded.encode_dna(*_dna_batch(loaded)), trained.encode_dna(*_dna_batch(trained)))
    second = loaded.save_pretrained(tmp_path / "again")
    before, after = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    config = json.loads((first / "config.json").read_text())
    assert json.loads((second / "config.json").read_text())["architectures"] == config["architectures"]


def test_embedder_for_barcodes_builds_no_image_view(tmp_path) -> None:
    checkpoint = save_run(tmp_path / "run", tiny_model(cfg=bag_only_model_cfg()))
    embedder = Embedder(checkpoint, device="cpu", modalities=("dna",))
    assert embedder.transform is None and not embedder.has_images
    emb, ids = embedder.embed_dna(BARCODES, ["a", "b"])
    assert emb.shape == (2, 16) and ids == ["a", "b"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, rtol=1e-6)
    with pytest.raises(ValueError, match=r"^the image tower of this model was not loaded \(loaded: dna\)$"):
        embedder.embed_images([tmp_path / "photo.jpg"])


def _photo(path) -> str:
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_towers_loaded_in_the_background_embed_as_those_loaded_at_once(tmp_path) -> None:
    checkpoint = save_run(tmp_path / "run", tiny_model(cfg=bag_only_model_cfg()))
    photo = _photo(tmp_path / "p.jpg")
    at_once = Embedder(checkpoint, device="cpu", modalities=("image", "dna"))
    later = Embedder(checkpoint, device="cpu", modalities=("image", "dna"), background=("image",))
    assert later.later == ("image",) and later.decode_side == at_once.decode_side  # known before the tower
    np.testing.assert_array_equal(later.embed_dna(BARCODES)[0], at_once.embed_dna(BARCODES)[0])
    np.testing.assert_array_equal(later.embed_images([photo]).embeddings, at_once.embed_images([photo]).embeddings)
    assert later.loading == () and later.model.modalities == ("image", "dna") and later.model.left_out == ("text",)


def test_a_tower_that_fails_to_load_in_the_background_is_named_where_it_is_needed(tmp_path) -> None:
    checkpoint = save_run(tmp_path / "run", tiny_model(cfg=bag_only_model_cfg()))
    weights = load_file(checkpoint / "model.safetensors")
    del weights["towers.image.backbone.cls_token"]
    save_file(weights, checkpoint / "model.safetensors")
    # Re-listed in the manifest, as a save of a model that lacks the tensor would list it (the load gets past
    # the checksums, then the image tower's weights do not fit).
    files = sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST)
    write_manifest(checkpoint, MANIFEST_KIND, files)
    embedder = Embedder(checkpoint, device="cpu", modalities=("image", "dna"), background=("image",))
    assert embedder.embed_dna(BARCODES)[0].shape == (2, 16)  # barcodes do not wait for, nor fail with, photos
    with pytest.raises(RuntimeError, match=r"^loading the image tower\(s\) failed: .*missing \['towers\.image\.backbo"):
        embedder.embed_images([_photo(tmp_path / "p.jpg")])
