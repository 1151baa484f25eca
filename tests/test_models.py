"""CLIBDModel and its towers: shapes, pooling, LoRA / frozen, subsets, save/load, checkpoint formats."""

import dataclasses
import itertools
import json
import math

import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM, BertModel

from clibd.config import DnaTowerConfig, ImageTowerConfig, LoraConfig, ModelConfig, TextTowerConfig
from clibd.embed.run_dir import checkpoint_hash
from clibd.models.clibd_model import CLIBDModel
from clibd.models.dna import DnaTower
from clibd.models.finetune import trainable_parameters
from clibd.models.image import ImageTower
from clibd.models.kmer_bag import make_kmer_tokenizer
from clibd.models.pooling import masked_mean
from clibd.models.text import TextTower, build_text_tokenizer
from clibd.models.weights import CheckpointMismatchError

CORPUS = [
    "Diptera Cecidomyiidae not_classified not_classified",
    "Diptera Chironomidae Tanytarsus Tanytarsus_pallidicornis",
    "Hymenoptera Formicidae Lasius Lasius niger",
    "Lepidoptera Geometridae Eupithecia not_classified",
]
SEQS = ["ACGTACGTTTGACCAGTAAACGGT", "ACGGTTACNNACGT", "TTTTGGGGCCCCAAAAACGTACGTACGTAAC", "AC"]


def tiny_cfg(**towers) -> ModelConfig:
    cfg = ModelConfig(
        embed_dim=16,
        image=ImageTowerConfig(name="test_vit", image_size=32),
        dna=DnaTowerConfig(k=3, max_nucleotides=30, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
        text=TextTowerConfig(
            name=None, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=120
        ),
    )
    for name, changes in towers.items():
        setattr(cfg, name, dataclasses.replace(getattr(cfg, name), **changes))
    return cfg


def make_batch(model: CLIBDModel, n: int = 4) -> dict[str, torch.Tensor]:
    batch: dict[str, torch.Tensor] = {"image": torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    if model.dna_tokenizer is not None:
        enc = model.dna_tokenizer(SEQS[:n])
        batch["dna_ids"], batch["dna_mask"] = (
            torch.from_numpy(enc.ids).long(),
            torch.from_numpy(enc.attention_mask).long(),
        )
    if model.text_tokenizer is not None:
        tok = model.text_tokenizer(CORPUS[:n], padding=True, return_tensors="pt")
        batch["text_ids"], batch["text_mask"] = tok["input_ids"], tok["attention_mask"]
    return batch


def test_public_import() -> None:
    from clibd import CLIBDModel as exported

    assert exported is CLIBDModel


def test_embeddings_have_shape_and_unit_norm(text_tokenizer) -> None:
    model = CLIBDModel(tiny_cfg(), text_tokenizer=text_tokenizer).eval()
    out, _ = model(make_batch(model))
    assert model.modalities == ("image", "dna", "text") and set(out) == set(model.modalities)
    for emb in out.values():
        assert emb.shape == (4, 16)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))


def test_logit_scale_init_and_clamp(text_tokenizer) -> None:
    model = CLIBDModel(tiny_cfg(), text_tokenizer=text_tokenizer)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    assert isinstance(model.logit_scale, torch.nn.Parameter)
    features, scale = model(make_batch(model))
    assert scale is model.logit_scale and set(features) == {"image", "dna", "text"}  # forward returns it


def test_logit_scale_max_none_never_clamps(text_tokenizer) -> None:
    model = CLIBDModel(dataclasses.replace(tiny_cfg(), logit_scale_max=None), text_tokenizer=text_tokenizer)
    for value in (9.0, -1.0):  # above ln(100), below ln(1): the published recipe leaves both
        with torch.no_grad():
            model.logit_scale.fill_(value)
        model.clamp_logit_scale()
        assert model.logit_scale.item() == value


def test_masked_mean_values_and_all_padding_row() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [float("nan"), 100.0]], [[5.0, 5.0], [7.0, 7.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    torch.testing.assert_close(masked_mean(hidden, mask), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


@pytest.mark.parametrize("modality", ["dna", "text"])
def test_mean_pooling_ignores_padding(text_tokenizer, modality) -> None:
    model = CLIBDModel(tiny_cfg(image={"enabled": False}), text_tokenizer=text_tokenizer).eval()
    batch = make_batch(model)
    ids, mask = batch[f"{modality}_ids"], batch[f"{modality}_mask"]
    assert (mask == 0).any(), "the batch must contain padding for this test to mean anything"
    scrambled = torch.where(mask.bool(), ids, torch.randint_like(ids, 3, 20))
    assert not torch.equal(scrambled, ids)
    encode = model.encode_dna if modality == "dna" else model.encode_text
    with torch.no_grad():
        torch.testing.assert_close(encode(scrambled, mask), encode(ids, mask), rtol=0, atol=1e-6)
        # while changing a real token does move the embedding
        changed = ids.clone()
        changed[0, 1] = 3 if ids[0, 1] != 3 else 4
        assert not torch.allclose(encode(changed, mask)[0], encode(ids, mask)[0], atol=1e-4)


def test_all_padding_dna_row_is_finite(text_tokenizer) -> None:
    model = CLIBDModel(tiny_cfg(image={"enabled": False}, text={"enabled": False})).eval()
    enc = model.dna_tokenizer(["", "NNNN", SEQS[0]])
    assert enc.attention_mask[0].sum() == 0 and enc.attention_mask[1].sum() == 0
    with torch.no_grad():
        emb = model.encode_dna(torch.from_numpy(enc.ids).long(), torch.from_numpy(enc.attention_mask).long())
    assert torch.isfinite(emb).all()


def _train_step(model: CLIBDModel) -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Adam: every parameter with a non-zero gradient moves by about lr, however small the gradient
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out, _ = model(make_batch(model))
    loss = sum((out[a] @ out[b].T).diag().sum() * model.logit_scale for a, b in itertools.combinations(out, 2))
    loss.backward()
    opt.step()
    return before


def test_lora_trains_only_adapters_heads_and_scale(text_tokenizer) -> None:
    lora = {"finetune": "lora", "lora": LoraConfig(r=2, alpha=4)}
    model = CLIBDModel(tiny_cfg(image=lora, dna=lora, text=lora), text_tokenizer=text_tokenizer).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if ".lora_A." in n or ".lora_B." in n}
    assert trainable == adapters | {n for n in trainable if n.startswith("heads.")} | {"logit_scale"}
    # the default targets: fused qkv in the timm ViT, query and value in both BERTs
    assert any(".attn.qkv.lora_A" in n for n in adapters)
    for tower in ("dna", "text"):
        hit = {n.split(".")[-4] for n in adapters if n.startswith(f"towers.{tower}.")}
        assert hit == {"query", "value"}
    # lora_B starts at zero, so step twice to move every adapter matrix
    _train_step(model)
    before = _train_step(model)
    for name, param in model.named_parameters():
        moved = not torch.equal(param, before[name])
        assert moved == (name in trainable), name


def test_frozen_tower_gets_no_gradient_and_stays_in_eval(text_tokenizer) -> None:
    model = CLIBDModel(tiny_cfg(dna={"finetune": "frozen"}), text_tokenizer=text_tokenizer).train()
    assert not model.towers["dna"].training and model.towers["image"].training
    before = _train_step(model)
    for name, param in model.named_parameters():
        if name.startswith("towers.dna."):
            assert param.grad is None and torch.equal(param, before[name])
    assert not torch.equal(model.heads["dna"].weight, before["heads.dna.weight"])
    assert not torch.equal(
        model.towers["image"].backbone.patch_embed.proj.weight, before["towers.image.backbone.patch_embed.proj.weight"]
    )
    counts = trainable_parameters(model)
    head = sum(p.numel() for p in model.heads["dna"].parameters())
    assert counts["dna"] == (head, head + sum(p.numel() for p in model.towers["dna"].parameters()))
    assert counts["total"][1] == sum(p.numel() for p in model.parameters())


def test_bad_finetune_mode_is_named(text_tokenizer) -> None:
    with pytest.raises(ValueError, match="model.text.finetune='partial'"):
        CLIBDModel(tiny_cfg(text={"finetune": "partial"}), text_tokenizer=text_tokenizer)


SUBSETS = [s for n in (1, 2, 3) for s in itertools.combinations(("image", "dna", "text"), n)]


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_every_modality_subset_builds_and_forwards(text_tokenizer, subset) -> None:
    off = {m: {"enabled": False} for m in ("image", "dna", "text") if m not in subset}
    model = CLIBDModel(tiny_cfg(**off), text_tokenizer=text_tokenizer)
    out, _ = model(make_batch(model, 2))
    assert model.modalities == subset and tuple(out) == subset
    assert set(model.towers) == set(subset) and set(model.heads) == set(subset)
    missing = next((m for m in ("image", "dna", "text") if m not in subset), None)
    if missing:
        with pytest.raises(ValueError, match=f"no {missing} tower"):
            getattr(model, f"encode_{missing}")(
                *([torch.zeros(1, 3, 32, 32)] if missing == "image" else [torch.zeros(1, 4).long()] * 2)
            )


def test_gradient_checkpointing_keeps_outputs(text_tokenizer) -> None:
    on = {"gradient_checkpointing": True}
    torch.manual_seed(0)
    plain = CLIBDModel(tiny_cfg(), text_tokenizer=text_tokenizer)
    torch.manual_seed(0)
    ckpt = CLIBDModel(tiny_cfg(image=on, dna=on, text=on), text_tokenizer=text_tokenizer)
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.towers["image"].backbone.grad_checkpointing
    assert (
        ckpt.towers["dna"].backbone.is_activation_checkpointing
        and ckpt.towers["text"].backbone.is_activation_checkpointing
    )
    plain.eval(), ckpt.eval()  # no dropout, so the two must agree
    batch = make_batch(plain)
    (a, _), (b, _) = plain(batch), ckpt(batch)
    for m in a:
        torch.testing.assert_close(a[m], b[m])
    sum(v.sum() for v in b.values()).backward()
    assert ckpt.heads["image"].weight.grad is not None


def test_save_and_load_round_trip(tmp_path, text_tokenizer) -> None:
    cfg = tiny_cfg(image={"finetune": "lora"}, dna={"finetune": "frozen"})
    model = CLIBDModel(cfg, text_tokenizer=text_tokenizer)
    with torch.no_grad():
        for p in model.parameters():  # LoRA B starts at zero; make the adapters count
            p.add_(0.01 * torch.randn_like(p))
        model.logit_scale.fill_(3.0)
    target = model.save_pretrained(tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "ckpt")  # overwriting an existing save works too
    assert sorted(p.name for p in target.iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "text_tokenizer",
    ]
    manifest = json.loads((target / "manifest.json").read_text())  # every file, the weights' sha256 among them
    assert sorted(manifest["files"]) == sorted(
        str(p.relative_to(target)) for p in target.rglob("*") if p.is_file() and p.name != "manifest.json"
    )
    assert manifest["checkpoint_hash"] == checkpoint_hash(target)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    loaded = CLIBDModel.from_pretrained(target, expected=cfg)
    assert loaded.logit_scale.item() == 3.0 and loaded.dna_tokenizer.settings() == model.dna_tokenizer.settings()
    batch = make_batch(model)
    model.eval(), loaded.eval()
    with torch.no_grad():
        (a, _), (b, _) = model(batch), loaded(batch)
    for m in a:
        assert torch.equal(a[m], b[m]), m
    # the loaded text tokenizer is the saved one (same casing, same truncation limit)
    assert loaded.text_tokenizer(CORPUS)["input_ids"] == text_tokenizer(CORPUS)["input_ids"]
    assert (
        loaded.text_tokenizer.model_max_length == 512 == loaded.towers["text"].backbone.config.max_position_embeddings
    )


def test_from_pretrained_refuses_other_architecture(tmp_path, text_tokenizer) -> None:
    CLIBDModel(tiny_cfg(), text_tokenizer=text_tokenizer).save_pretrained(tmp_path / "ckpt")
    other = tiny_cfg(dna={"hidden_size": 64, "k": 4})
    other.embed_dim = 32
    with pytest.raises(CheckpointMismatchError) as err:
        CLIBDModel.from_pretrained(tmp_path / "ckpt", expected=other)
    msg = str(err.value)
    assert "dna.hidden_size found=32 expected=64" in msg and "dna.k found=3 expected=4" in msg
    assert "embed_dim found=16 expected=32" in msg and "text." not in msg
    # training-only settings are not part of the architecture
    CLIBDModel.from_pretrained(tmp_path / "ckpt", expected=tiny_cfg(image={"gradient_checkpointing": True}))


# ---- checkpoint formats ------------------------------------------------------------------


def _assert_weights_equal(module: torch.nn.Module, saved: dict[str, torch.Tensor], prefix: str = "") -> None:
    state = module.state_dict()
    compared = 0
    for key, value in saved.items():
        if key.startswith(prefix) and key[len(prefix) :] in state:
            assert torch.equal(state[key[len(prefix) :]], value), key
            compared += 1
    assert compared == len(state), f"compared {compared} of {len(state)} tensors"


@pytest.mark.parametrize("layout", ["file", "dir"])
def test_timm_weights_from_local_safetensors(tmp_path, layout) -> None:
    # a checkpoint with its classifier head (as published weights have): the head is dropped
    source = timm.create_model("test_vit", pretrained=False, num_classes=7, img_size=32)
    saved = {k: v.clone() for k, v in source.state_dict().items()}
    if layout == "file":
        path = tmp_path / "vit.safetensors"
        save_file(saved, path)
    else:
        path = tmp_path / "vit"
        path.mkdir()
        save_file(saved, path / "model.safetensors")
        (path / "config.json").write_text(json.dumps({"architecture": "test_vit", "num_classes": 7}))
    tower = ImageTower(ImageTowerConfig(name="test_vit", image_size=32, pretrained=str(path)))
    _assert_weights_equal(tower.backbone, saved)
    assert tower(torch.zeros(2, 3, 32, 32)).shape == (2, tower.output_dim) == (2, 64)
    assert tower.backbone.global_pool == "token"


def test_timm_dir_for_another_architecture_is_refused(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_small_patch16_224.augreg_in21k"}))
    save_file({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="vit_small_patch16_224.*test_vit"):
        ImageTower(ImageTowerConfig(name="test_vit", image_size=32, pretrained=str(tmp_path)))


TINY_OPEN_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.mark.parametrize("layout", ["local-dir", "checkpoint-file"])
def test_open_clip_visual_tower_from_local_checkpoint(tmp_path, layout) -> None:
    (tmp_path / "TinyCLIP-test.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(tmp_path / "TinyCLIP-test.json")
    source = open_clip.create_model("TinyCLIP-test")
    saved = {k: v.clone() for k, v in source.state_dict().items()}
    if layout == "local-dir":
        path = tmp_path / "oc"
        path.mkdir()
        (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP}))
        save_file(saved, path / "open_clip_model.safetensors")
        cfg = ImageTowerConfig(
            backbone="open_clip", name="unused-when-a-dir-is-given", image_size=32, pretrained=str(path)
        )
    else:
        path = tmp_path / "oc.pt"
        torch.save({"state_dict": saved, "epoch": 1}, path)
        cfg = ImageTowerConfig(backbone="open_clip", name="TinyCLIP-test", image_size=32, pretrained=str(path))
    tower = ImageTower(cfg)
    _assert_weights_equal(tower.backbone, saved, prefix="visual.")
    assert tower(torch.zeros(2, 3, 32, 32)).shape == (2, 24)
    # rebuilt from its recorded architecture, with nothing loaded, it has the same shapes
    rebuilt = ImageTower(dataclasses.replace(cfg, pretrained=None), arch=json.loads(json.dumps(tower.arch)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in tower.state_dict().items()}


def test_open_clip_lora_default_targets_attention(tmp_path, text_tokenizer) -> None:
    (tmp_path / "TinyCLIP-lora.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(tmp_path / "TinyCLIP-lora.json")
    cfg = tiny_cfg(image={"backbone": "open_clip", "name": "TinyCLIP-lora", "finetune": "lora"}, dna={"enabled": False})
    model = CLIBDModel(cfg, text_tokenizer=text_tokenizer)
    trainable = [n for n, p in model.towers["image"].named_parameters() if p.requires_grad]
    assert trainable and all(".attn." in n and ".lora_" in n for n in trainable)
    model.save_pretrained(tmp_path / "m")
    loaded = CLIBDModel.from_pretrained(tmp_path / "m")
    batch = make_batch(model, 2)
    with torch.no_grad():
        assert torch.equal(model.eval()(batch)[0]["image"], loaded.eval()(batch)[0]["image"])


def test_text_tower_from_local_hf_directory(tmp_path, text_tokenizer) -> None:
    config = BertConfig(
        vocab_size=len(text_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(tmp_path / "bert")
    text_tokenizer.save_pretrained(tmp_path / "bert")
    saved = BertModel.from_pretrained(tmp_path / "bert").state_dict()
    cfg = TextTowerConfig(name=str(tmp_path / "bert"), pooling="cls")
    tokenizer = build_text_tokenizer(cfg)
    assert tokenizer(CORPUS)["input_ids"] == text_tokenizer(CORPUS)["input_ids"]
    tower = TextTower(cfg, tokenizer)
    _assert_weights_equal(tower.backbone, saved)
    assert tower.backbone.pooler is None  # unused, so it must not sit there without gradient
    tok = tokenizer(CORPUS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = tower.backbone(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        torch.testing.assert_close(tower.eval()(tok["input_ids"], tok["attention_mask"]), hidden[:, 0])


DNA = DnaTowerConfig(k=3, max_nucleotides=30, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


def _barcodebert(vocab_size: int, hidden: int = 32) -> BertForMaskedLM:
    return BertForMaskedLM(
        BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
    )


@pytest.mark.parametrize("fmt", ["hf_dir", "state_dict_pt", "state_dict_safetensors"])
def test_barcodebert_checkpoint_formats(tmp_path, fmt) -> None:
    mlm = _barcodebert(make_kmer_tokenizer(DNA).vocab_size)
    saved = {k: v.clone() for k, v in mlm.state_dict().items()}
    if fmt == "hf_dir":
        mlm.save_pretrained(tmp_path / "bb")
        path = tmp_path / "bb"
    elif fmt == "state_dict_pt":
        path = tmp_path / "bb.pt"
        torch.save(mlm.state_dict(), path)
    else:
        path = tmp_path / "bb.safetensors"
        save_file({k: v.contiguous() for k, v in saved.items() if k != "cls.predictions.decoder.weight"}, path)
    tower = DnaTower(dataclasses.replace(DNA, pretrained=str(path)))
    _assert_weights_equal(tower.backbone, saved, prefix="bert.")
    assert tower.backbone.config.max_position_embeddings == 512
    enc = tower.tokenizer(SEQS)
    out = tower(torch.from_numpy(enc.ids).long(), torch.from_numpy(enc.attention_mask).long())
    assert out.shape == (4, 32)


@pytest.mark.parametrize("fmt", ["hf_dir", "state_dict_pt"])
@pytest.mark.parametrize("field", ["vocab_size", "hidden_size"])
def test_barcodebert_mismatch_is_refused_naming_the_field(tmp_path, fmt, field) -> None:
    vocab = make_kmer_tokenizer(DNA).vocab_size
    mlm = _barcodebert(vocab + 4**4 if field == "vocab_size" else vocab, hidden=64 if field == "hidden_size" else 32)
    if fmt == "hf_dir":
        mlm.save_pretrained(tmp_path / "bb")
        path = tmp_path / "bb"
    else:
        path = tmp_path / "bb.pt"
        torch.save(mlm.state_dict(), path)
    expected = vocab if field == "vocab_size" else 32
    with pytest.raises(CheckpointMismatchError, match=rf"bb.*{field} found=\d+ expected={expected}"):
        DnaTower(dataclasses.replace(DNA, pretrained=str(path)))


def test_from_pretrained_never_reloads_tower_checkpoints(tmp_path, text_tokenizer) -> None:
    mlm = _barcodebert(make_kmer_tokenizer(DNA).vocab_size)
    mlm.save_pretrained(tmp_path / "bb")
    cfg = tiny_cfg(dna={"pretrained": str(tmp_path / "bb")})
    model = CLIBDModel(cfg, text_tokenizer=text_tokenizer)
    model.save_pretrained(tmp_path / "clibd")
    for f in (tmp_path / "bb").iterdir():
        f.unlink()
    loaded = CLIBDModel.from_pretrained(tmp_path / "clibd")
    assert loaded.towers["dna"].backbone.config.max_position_embeddings == 512
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_unknown_image_weights_and_lora_targets_are_named(text_tokenizer) -> None:
    with pytest.raises(FileNotFoundError, match="image.pretrained='no_such_tag'.*test_vit"):
        ImageTower(ImageTowerConfig(name="test_vit", image_size=32, pretrained="no_such_tag"))
    bad = {"finetune": "lora", "lora": LoraConfig(targets=["nope"])}
    with pytest.raises(ValueError, match=r"model.image.lora.targets=\['nope'\]"):
        CLIBDModel(tiny_cfg(image=bad), text_tokenizer=text_tokenizer)


def test_trained_text_vocabulary_is_the_same_on_every_run() -> None:
    import subprocess
    import sys

    code = (
        "from clibd.config import TextTowerConfig; from clibd.models.text import build_text_tokenizer;"
        "t = build_text_tokenizer(TextTowerConfig(name=None, vocab_size=80),"
        " [f'Diptera Fam{i % 7}idae Gen{i % 13}us sp{i}' for i in range(200)]);"
        "print(sorted(t.get_vocab().items()))"
    )
    # Separate interpreters: hash-map seeds differ per process, which is what broke the old trainer.
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(runs) == 1
    tokens = dict(eval(runs.pop()))
    assert "diptera" in tokens and "##e" in tokens and len(tokens) == 80
