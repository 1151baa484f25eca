"""The switches that restore the published recipe (docs/fidelity.md), each against an oracle
written from the original's description, and the paper presets that set them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image
from torchvision import transforms as v1

from clibd.config import AugmentConfig, ConfigError, TextTowerConfig, load_config
from clibd.data.text import encode_taxonomy
from clibd.data.transforms import build_normalize, build_pil_transform, decode_side
from clibd.models.text import TextTower, build_text_tokenizer
from tests.data_paths import REAL_IMAGES, needs_shared_data

ROOT = Path(__file__).resolve().parents[1]
PAPER_AUGMENT = AugmentConfig(
    resize_before_crop=256, scale_min=0.08, hflip=0.5, vflip=0.5, rotate_degrees=45, rotate_fill=0, color_jitter=0
)
FROM_SCRATCH = ["model.dna.pretrained=none"]  # the paper presets require the BarcodeBERT checkpoint, or this


def _noise(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_eval_view_of_a_256_px_image_is_the_centre_224_box():
    # Resize 256 leaves a 320x256 image as it is; CenterCrop 224 then keeps x 48..271, y 16..239.
    img = _noise(320, 256, seed=0)
    x = build_pil_transform(224, None, eval_resize=256)(img)
    expected = torch.from_numpy(np.array(img)[16:240, 48:272]).permute(2, 0, 1)
    assert torch.equal(x, expected)
    # Our default view resizes the shorter side to 224 first: the whole height is kept.
    assert not torch.equal(build_pil_transform(224)(img), expected)
    assert decode_side(224, None, eval_resize=256) == 256  # JPEG draft decoding keeps >= 256 px


def test_eval_view_smaller_than_the_crop_is_refused():
    with pytest.raises(ValueError, match="data.eval_resize=200 is smaller than the 224-px crop"):
        build_pil_transform(224, None, eval_resize=200)


def test_paper_training_transform_is_the_originals_composition_under_a_seed():
    # The original (util/dataset.py): Resize(256), RandomResizedCrop(224) with torchvision's default
    # scale (0.08, 1) and ratio (3/4, 4/3), RandomHorizontalFlip(), RandomVerticalFlip(),
    # RandomRotation((-45, 45)) filling black; no colour jitter, no normalisation.
    original = v1.Compose([
        v1.Resize(256, antialias=True), v1.RandomResizedCrop(224, antialias=True), v1.RandomHorizontalFlip(),
        v1.RandomVerticalFlip(), v1.RandomRotation(degrees=(-45, 45)), v1.PILToTensor(),
    ])  # fmt: skip
    ours = build_pil_transform(224, PAPER_AUGMENT)
    img = _noise(341, 300, seed=1)
    for seed in range(6):
        torch.manual_seed(seed)
        expected = original(img)
        torch.manual_seed(seed)
        assert torch.equal(ours(img), expected), f"seed {seed}"
    names = [type(t).__name__ for t in ours.transforms]
    assert names == [
        "Resize", "RandomResizedCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotation", "PILToTensor",
    ]  # fmt: skip
    crop, rotation = ours.transforms[1], ours.transforms[4]
    assert crop.scale == (0.08, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert list(rotation.degrees) == [-45.0, 45.0]
    assert decode_side(224, PAPER_AUGMENT) == 256


def test_original_pipeline_training_view_is_the_originals_float_composition_exactly():
    # bioscanclip/util/dataset.py lines 185-195, as composed there: ToTensor first, then every step on floats.
    original = v1.Compose([
        v1.ToTensor(), v1.Resize(size=256, antialias=True), v1.RandomResizedCrop(224, antialias=True),
        v1.RandomHorizontalFlip(), v1.RandomVerticalFlip(), v1.RandomRotation(degrees=(-45, 45)),
    ])  # fmt: skip
    ours = build_pil_transform(224, PAPER_AUGMENT, pipeline="original")
    img = _noise(341, 300, seed=1)
    for seed in range(6):
        torch.manual_seed(seed)
        expected = original(img)
        torch.manual_seed(seed)
        got = build_normalize([0.0] * 3, [1.0] * 3)(ours(img))
        assert got.dtype == torch.float32 and torch.equal(got, expected), f"seed {seed}"
    assert decode_side(224, PAPER_AUGMENT, pipeline="original") is None  # the whole image, as the original


def test_paper_rotation_fills_black_corners():
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    rotate_only = AugmentConfig(scale_min=1.0, hflip=0, rotate_degrees=45, rotate_fill=0, color_jitter=0)
    tf = build_pil_transform(32, rotate_only)
    torch.manual_seed(3)
    x = tf(white)  # a rotation by at least a few degrees uncovers every corner
    assert x[:, 0, 0].tolist() == [0, 0, 0] and x[:, 16, 16].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="rotate_fill must be a grey level in \\[0, 255\\], got 300"):
        build_pil_transform(32, AugmentConfig(rotate_degrees=10, rotate_fill=300))


def test_mean_0_std_1_gives_the_plain_unit_pixels_of_to_tensor():
    img = _noise(8, 8, seed=2)
    plain = build_normalize([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])(build_pil_transform(8)(img))
    torch.testing.assert_close(plain, v1.ToTensor()(img), rtol=0, atol=1e-7)


TAXA = [
    "Diptera Sciaridae Bradysia Bradysia_impatiens",
    "Hymenoptera Braconidae Aleiodes not_classified",
    # long enough to need more than 20 tokens
    "Lepidoptera Geometridae Eupithecia Eupithecia_abbreviata_very_long_placeholder_name_x_y_z_w_q_r_s",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_text_tokenizer(TextTowerConfig(name=None, vocab_size=80), TAXA)


def test_text_is_padded_and_truncated_to_20_tokens_as_the_original(tokenizer):
    table = _taxa_table()
    enc = encode_taxonomy(table, tokenizer, "{order} {family} {genus} {species}", "not_classified", max_length=20)
    # The original: tokenizer([text], padding="max_length", max_length=20, truncation=True).
    expected = tokenizer(enc.strings, padding="max_length", max_length=20, truncation=True)
    assert enc.ids.tolist() == expected["input_ids"]
    assert enc.mask.tolist() == expected["attention_mask"]
    assert enc.n_cut == 1 and enc.ids[enc.strings.index(TAXA[2]), -1] == tokenizer.sep_token_id


def _taxa_table():
    return pd.DataFrame([t.split(" ") for t in TAXA], columns=["order", "family", "genus", "species"]).astype("string")


def test_mean_all_text_pooling_averages_every_position_padding_included(tokenizer):
    cfg = TextTowerConfig(
        name=None, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, pooling="mean_all"
    )
    torch.manual_seed(0)
    tower = TextTower(cfg, tokenizer).eval()
    enc = encode_taxonomy(_taxa_table(), tokenizer, "{order} {family} {genus} {species}", "not_classified", 20)
    ids, mask = torch.from_numpy(enc.ids), torch.from_numpy(enc.mask).long()
    assert (mask == 0).any()
    with torch.no_grad():
        # The original: BertModel(input_ids, attention_mask).last_hidden_state.mean(dim=1).
        hidden = tower.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(tower(ids, mask), hidden.mean(dim=1), rtol=0, atol=0)
        tower.pooling = "mean"
        assert not torch.allclose(tower(ids, mask), hidden.mean(dim=1), atol=1e-3)


def test_unknown_text_pooling_is_named(tokenizer):
    with pytest.raises(ValueError, match=r"text.pooling='max': choose one of \('mean', 'mean_all', 'cls'\)"):
        TextTower(TextTowerConfig(name=None, hidden_size=16, num_layers=1, num_heads=2, pooling="max"), tokenizer)


def test_paper_vit_weights_are_timms_default_for_the_name(monkeypatch):
    from clibd.config import ImageTowerConfig
    from clibd.models import image

    # timm.create_model("vit_base_patch16_224", pretrained=True), as the original calls it, loads this tag.
    assert timm.models.get_pretrained_cfg("vit_base_patch16_224").tag == "augreg2_in21k_ft_in1k"
    calls = []
    monkeypatch.setattr(image.timm, "create_model", lambda name, **kw: calls.append((name, kw["pretrained"])))
    cfg = load_config(ROOT / "configs/bioscan5m/paper.yaml", FROM_SCRATCH).model.image
    assert isinstance(cfg, ImageTowerConfig)
    image.build_timm(cfg, load_weights=True)  # no download: create_model is replaced
    assert calls == [("vit_base_patch16_224.augreg2_in21k_ft_in1k", True)]


@pytest.mark.parametrize("dataset, epochs", [("bioscan5m", 20), ("bioscan1m", 50)])
def test_paper_presets_set_every_recipe_switch(dataset, epochs):
    cfg = load_config(ROOT / f"configs/{dataset}/paper.yaml", FROM_SCRATCH)
    assert (cfg.data.mean, cfg.data.std, cfg.data.eval_resize) == ([0.0] * 3, [1.0] * 3, 256)
    assert (cfg.data.image_pipeline, cfg.data.dna_cleaning, cfg.eval.unlabelled) == ("original",) * 2 + ("class",)
    assert cfg.train.seed == 42 and cfg.model.logit_scale_max is None and cfg.model.dna.pretrained is None
    assert cfg.data.augment == PAPER_AUGMENT
    assert (cfg.model.image.name, cfg.model.image.pretrained) == ("vit_base_patch16_224", "augreg2_in21k_ft_in1k")
    assert (cfg.model.text.max_length, cfg.model.text.pooling) == (20, "mean_all")
    dna = cfg.model.dna
    assert (dna.head, dna.pooling, dna.attention_mask, dna.prefix_token_id) == ("mlm_softmax", "mean_all", False, 0)
    assert (dna.vocab, dna.k, dna.max_nucleotides) == ("barcodebert_v1", 5, 660)
    assert (cfg.train.schedule, cfg.train.warmup_fraction, cfg.train.weight_decay) == ("onecycle", 0.3, 0.01)
    train = cfg.train
    assert (train.lr, train.batch_size, train.epochs, train.mixed_precision) == (5e-5, 500, epochs, "bf16")
    assert (cfg.eval.precision, cfg.eval.fused_pairs) == ("fp32", True)
    # The default presets keep our choices.
    ours = load_config(ROOT / f"configs/{dataset}/image_dna_text.yaml")
    assert (ours.data.eval_resize, ours.model.text.pooling, ours.eval.fused_pairs) == (None, "mean", False)
    assert (ours.model.dna.head, ours.model.dna.pooling, ours.model.dna.attention_mask) == ("linear", "mean", True)
    assert (ours.data.image_pipeline, ours.data.dna_cleaning, ours.eval.unlabelled) == ("clibd", "clibd", "drop")


@pytest.mark.parametrize("dataset", ["bioscan5m", "bioscan1m"])
def test_paper_presets_require_the_barcodebert_checkpoint_or_an_explicit_none(dataset, tmp_path):
    # The original always loads BarcodeBERT (bioscanclip/model/simple_clip.py lines 196-204), the 5-mer
    # checkpoint of bioscanclip/config/global_config.yaml line 35.
    paper = ROOT / f"configs/{dataset}/paper.yaml"
    with pytest.raises(ConfigError) as refused:
        load_config(paper)
    assert str(refused.value).startswith(f"{ROOT / 'configs/bioscan5m/paper.yaml'} requires model.dna.pretrained: ")
    assert "trained_with_canada_1_5M/model_41.pth" in str(refused.value)
    assert "model.dna.pretrained=none to train the DNA tower from scratch" in str(refused.value)
    assert load_config(paper, ["model.dna.pretrained=/ckpt/model_41.pth"]).model.dna.pretrained == "/ckpt/model_41.pth"
    for spelling in ("none", "None", "null"):
        assert load_config(paper, [f"model.dna.pretrained={spelling}"]).model.dna.pretrained is None
    # A file extending the preset may give it too.
    extending = tmp_path / "mine.yaml"
    extending.write_text(f"extends: {paper}\nmodel:\n  dna:\n    pretrained: /ckpt/model_41.pth\n")
    assert load_config(extending).model.dna.pretrained == "/ckpt/model_41.pth"


def test_print_config_shows_the_resolved_recipe_without_data(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/bioscan5m/paper.yaml"),
         "--print-config", f"data.root={tmp_path / 'absent'}", "train.epochs=3", *FROM_SCRATCH],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (tmp_path / "printed.yaml").write_text(out.stdout)
    printed = load_config(tmp_path / "printed.yaml")
    assert printed.train.epochs == 3 and printed.data.root == str(tmp_path / "absent")
    assert printed.model.text.pooling == "mean_all" and printed.data.augment.scale_min == 0.08
    assert not (tmp_path / "runs").exists() and not (tmp_path / "absent").exists()


def test_embedder_sees_new_specimens_through_the_runs_eval_view(tmp_path):
    from clibd.config import Config
    from clibd.embed.embedder import Embedder
    from tests.helpers.tiny_checkpoint import save_run, tiny_model

    cfg = Config()
    cfg.data.eval_resize = 40  # the tiny model's crop is 32 px
    checkpoint = save_run(tmp_path / "run", tiny_model(), cfg)
    img = _noise(40, 48, seed=4)  # already 40 px on the shorter side: CenterCrop 32 keeps x 4..35, y 8..39
    x = Embedder(checkpoint, device="cpu").transform(img)
    assert torch.equal(x, torch.from_numpy(np.array(img)[8:40, 4:36]).permute(2, 0, 1))


@needs_shared_data
def test_dataset_with_the_original_pipeline_serves_the_originals_pixels():
    """Evaluation batches of data.image_pipeline=original on real 1024x768 photos: the original's
    ToTensor -> Resize(256) -> CenterCrop(224) (bioscanclip/util/dataset.py lines 217-222), bit for bit."""
    from clibd.config import DataConfig
    from clibd.data.dataset import SpecimenDataset

    photos = sorted(REAL_IMAGES.glob("valid_*.jpg"))[:4]
    table = pd.DataFrame({"processid": [p.stem for p in photos], "image_ref": [str(p) for p in photos]})
    table = table.assign(split="test", order="x", family="x", genus="x", species="x").astype("string")
    data = DataConfig(mean=[0.0] * 3, std=[1.0] * 3, eval_resize=256, image_pipeline="original")
    served = SpecimenDataset(table, data, image_size=224).__getitems__(list(range(len(photos))))
    original = v1.Compose([v1.ToTensor(), v1.Resize(size=256, antialias=True), v1.CenterCrop(224)])
    assert torch.equal(served["image"], torch.stack([original(Image.open(p)) for p in photos]))
    on_device = DataConfig(image_pipeline="original", augment=AugmentConfig(on_device=True))
    with pytest.raises(ValueError, match="data.augment.on_device augments uint8 crops on the device; data.image_pipel"):
        SpecimenDataset(table, on_device, image_size=224, train=True)


def test_a_trained_model_keeps_the_inputs_of_its_data_config(tmp_path):
    """build_model records data.dna_cleaning, the normalisation and the evaluation view in the model, so
    its saved folder embeds new specimens as training saw them (the Embedder, clibd embed / classify)."""
    from clibd.config import Config
    from clibd.embed.embedder import Embedder
    from clibd.models.clibd_model import CLIBDModel
    from clibd.train.build import build_model
    from tests.helpers.tiny_checkpoint import tiny_model_cfg

    cfg = Config(model=tiny_model_cfg(image_size=32))
    cfg.data.mean, cfg.data.std, cfg.data.eval_resize = [0.0] * 3, [1.0] * 3, 37
    cfg.data.image_pipeline, cfg.data.dna_cleaning = "original", "original"
    rows = _taxa_table()
    model = build_model(cfg, rows, None)
    model.save_pretrained(tmp_path / "model")  # no run config.yaml beside it: config.json alone says it
    again = CLIBDModel.from_pretrained(tmp_path / "model")
    assert again.dna_tokenizer.cleaning == "original"
    assert (again.image_view, again.image_normalization) == (
        {"eval_resize": 37, "pipeline": "original"}, {"mean": [0.0] * 3, "std": [1.0] * 3}
    )  # fmt: skip
    embedder = Embedder(tmp_path / "model", device="cpu")
    img = _noise(60, 50, seed=5)
    expected = v1.Compose([v1.ToTensor(), v1.Resize(size=37, antialias=True), v1.CenterCrop(32)])(img)
    assert embedder.decode_side is None and torch.equal(embedder.normalize(embedder.transform(img)[None])[0], expected)
    assert Embedder(again, device="cpu").decode_side is None  # a model object carries it too
