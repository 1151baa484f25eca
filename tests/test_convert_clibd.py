"""``clibd convert-clibd``: a state dict with the original CLIBD's key names and shapes (built here at
tiny sizes by tests/helpers/original_clibd.py) becomes a CLIBDModel whose embeddings equal the
original's forward pass on the same inputs."""

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as v1

from clibd.cli import main
from clibd.config import TextTowerConfig, load_config
from clibd.embed.embedder import Embedder
from clibd.models.clibd_model import CLIBDModel
from clibd.models.text import build_text_tokenizer
from clibd.models.weights import CheckpointMismatchError
from tests.data_paths import REAL_IMAGES, needs_shared_data
from tests.helpers.original_clibd import OriginalCLIBD
from tests.oracles import original_sequence_pipeline

ROOT = Path(__file__).resolve().parents[1]

CORPUS = [
    "Diptera Cecidomyiidae not_classified not_classified",
    "Hymenoptera Formicidae Lasius Lasius niger",
    "Lepidoptera Geometridae Eupithecia not_classified",
]
SEQS = ["ACGTACGTTTGACCAGTAAACGGTAC" * 20, "ACGGTTACNNACGT", "TTTTGGGGCCCCAAAAACGTACGTACGTAAC"]
OLD_NAMES = {
    "base_image_encoder": "lora_vit",
    "base_dna_encoder": "lora_barcode_bert",
    "base_language_encoder": "lora_bert",
}


def _their_yaml(path, text: bool, tokenizer_dir) -> None:
    lines = [
        "output_dim: 12",
        "image:",
        "  input_type: image",
        "  pre_train_model: test_vit",
        "dna:",
        "  input_type: sequence",
        "  model: barcode_bert",
        "disable_lora: true",
    ]
    if text:
        lines += ["language:", "  input_type: sequence", f"  pre_train_model: {tokenizer_dir}"]
    path.write_text("\n".join(lines) + "\n")


def _convert(tmp_path, out, *extra: str) -> int:
    """``clibd convert-clibd`` of ``tmp_path/best.pth`` with ``tmp_path/their.yaml`` into ``out``."""
    command = ["convert-clibd", str(tmp_path / "best.pth"), "--config", str(tmp_path / "their.yaml")]
    return main([*command, "--out", str(out), *extra])


def _save(original: OriginalCLIBD, path, ddp: bool, old_names: bool) -> None:
    state = original.state_dict()
    if old_names:
        state = {_rename(k): v for k, v in state.items()}
    torch.save({("module." if ddp else "") + k: v for k, v in state.items()}, path)


def _rename(key: str) -> str:
    for new, old in OLD_NAMES.items():
        key = key.replace(new, old)
    return key


@pytest.mark.parametrize(
    "text, lora, ddp, old_names",
    [(True, False, False, False), (True, True, True, False), (False, True, False, True)],
    ids=["image_dna_text_full", "image_dna_text_lora_ddp", "image_dna_lora_old_names"],
)
def test_converted_model_embeds_like_the_original(tmp_path, text, lora, ddp, old_names) -> None:
    tokenizer = build_text_tokenizer(TextTowerConfig(name=None, vocab_size=80), CORPUS)
    tokenizer.save_pretrained(tmp_path / "tok")
    original = OriginalCLIBD(dna_vocab=3 + 4**5, text_vocab=len(tokenizer), text=text, lora=lora)
    _save(original, tmp_path / "best.pth", ddp, old_names)
    # The tokenizer comes from the yaml's language.pre_train_model when local, else from --text-tokenizer.
    flag = ["--text-tokenizer", str(tmp_path / "tok")] if lora else []
    _their_yaml(tmp_path / "their.yaml", text, "prajjwal1/bert-small" if lora else tmp_path / "tok")

    assert _convert(tmp_path, tmp_path / "converted", "--dna-heads", "2", "--text-heads", "3", *flag) == 0
    model = CLIBDModel.from_pretrained(tmp_path / "converted").eval()
    assert model.modalities == (("image", "dna", "text") if text else ("image", "dna"))
    assert model.cfg.image.image_size == 32 and model.logit_scale.item() == 2.5

    image = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    enc = model.dna_tokenizer(SEQS)
    ids, mask = torch.from_numpy(enc.ids).long(), torch.from_numpy(enc.attention_mask).long()
    # The original's sequence_pipeline: [0, *5-mer ids of the sequence N-padded to 660] (133 positions).
    assert ids.shape == (3, 133) and ids[:, 0].tolist() == [0, 0, 0]
    text_inputs = tokenizer(CORPUS, padding="max_length", max_length=20, truncation=True, return_tensors="pt")
    expected = original.embed(image, ids, dict(text_inputs) if text else None)
    with torch.no_grad():
        got = {"image": model.encode_image(image), "dna": model.encode_dna(ids, mask)}
        if text:
            got["text"] = model.encode_text(text_inputs["input_ids"], text_inputs["attention_mask"])
    assert got.keys() == expected.keys()
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_tower_missing_from_the_checkpoint_is_named(tmp_path, capsys) -> None:
    tokenizer = build_text_tokenizer(TextTowerConfig(name=None, vocab_size=80), CORPUS)
    tokenizer.save_pretrained(tmp_path / "tok")
    _save(OriginalCLIBD(dna_vocab=3 + 4**5, text_vocab=len(tokenizer), text=False), tmp_path / "best.pth", False, False)
    _their_yaml(tmp_path / "their.yaml", True, tmp_path / "tok")
    assert _convert(tmp_path, tmp_path / "out") == 1  # one line, no traceback (clibd.cli)
    assert (
        f"clibd convert-clibd: {tmp_path / 'best.pth'}: holds towers ['dna', 'image'], "
        "the yaml describes ['dna', 'image', 'text']"
    ) in capsys.readouterr().err
    with pytest.raises(CheckpointMismatchError, match=r"holds towers \['dna', 'image'\]"):
        _convert(tmp_path, tmp_path / "out", "--debug")  # --debug raises it whole


def test_text_tokenizer_is_never_downloaded(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    _save(OriginalCLIBD(dna_vocab=3 + 4**5, text_vocab=50), tmp_path / "best.pth", False, False)
    _their_yaml(tmp_path / "their.yaml", True, "prajjwal1/bert-small")
    assert _convert(tmp_path, tmp_path / "out") == 1
    assert (
        "'prajjwal1/bert-small' is neither a local directory nor in the Hugging Face cache; pass --text-tokenizer DIR"
    ) in capsys.readouterr().err


# ---- the converted folder carries the original's inference recipe --------------------------------------

ORIGINAL_EVAL_VIEW = v1.Compose([v1.ToTensor(), v1.Resize(size=256, antialias=True), v1.CenterCrop(224)])
"""bioscanclip/util/dataset.py lines 217-222: the original's evaluation transform, as it composes it."""


@pytest.fixture(scope="module")
def converted_224(tmp_path_factory):
    """A tiny original with a 224-px ViT (the published input size), converted with ``clibd convert-clibd``."""
    tmp = tmp_path_factory.mktemp("convert224")
    tokenizer = build_text_tokenizer(TextTowerConfig(name=None, vocab_size=80), CORPUS)
    tokenizer.save_pretrained(tmp / "tok")
    original = OriginalCLIBD(dna_vocab=3 + 4**5, text_vocab=len(tokenizer), image_size=224)
    _save(original, tmp / "best.pth", ddp=False, old_names=False)
    _their_yaml(tmp / "their.yaml", True, tmp / "tok")
    assert _convert(tmp, tmp / "converted", "--dna-heads", "2", "--text-heads", "3") == 0
    return original, tokenizer, tmp / "converted"


def test_converted_folder_records_the_originals_inputs(converted_224) -> None:
    _, _, folder = converted_224
    meta = json.loads((folder / "config.json").read_text())
    assert meta["image_normalization"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    assert meta["image_view"] == {"eval_resize": 256, "pipeline": "original"}
    assert meta["dna_tokenizer"] == {
        "k": 5, "stride": 5, "vocab": "barcodebert_v1", "max_nucleotides": 660, "prefix_id": 0, "cleaning": "original"
    }  # fmt: skip
    model = meta["model"]
    assert model["logit_scale_max"] is None  # the original's logit scale is never clamped
    assert (model["text"]["max_length"], model["text"]["pooling"]) == (20, "mean_all")
    dna = model["dna"]
    assert (dna["head"], dna["pooling"], dna["attention_mask"]) == ("mlm_softmax", "mean_all", False)
    # config.yaml: `python eval.py --checkpoint DIR data.root=...` evaluates with the original's protocol,
    # the paper preset's data and eval values.
    run = load_config(folder / "config.yaml")
    paper = load_config(ROOT / "configs/bioscan5m/paper.yaml", ["model.dna.pretrained=none"])
    for field in ("mean", "std", "eval_resize", "image_pipeline", "dna_cleaning"):
        assert getattr(run.data, field) == getattr(paper.data, field), field
    for field in ("precision", "fused_pairs", "unlabelled"):
        assert getattr(run.eval, field) == getattr(paper.eval, field), field
    assert run.train.seed == paper.train.seed == 42 and run.eval.modalities == ["image", "dna", "text"]
    assert CLIBDModel.from_pretrained(folder).dna_tokenizer.cleaning == "original"


@needs_shared_data
def test_converted_folder_feeds_the_model_the_originals_pixels(converted_224) -> None:
    """What the Embedder of a converted folder feeds the ViT, against the original's transform, on real
    1024x768 BIOSCAN photos: identical pixels (max abs difference 0), and no warning."""
    _, _, folder = converted_224
    photos = sorted(REAL_IMAGES.glob("*.jpg"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder = Embedder(folder, device="cpu", batch_size=8)
    fed = []
    encode = embedder.encode
    embedder.encode = lambda batch, modality: fed.append(batch["image"].cpu()) or encode(batch, modality)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder.embed_images(photos)
    ours = torch.cat(fed)
    theirs = torch.stack([ORIGINAL_EVAL_VIEW(Image.open(io.BytesIO(p.read_bytes()))) for p in photos])
    assert len(photos) == 40 and ours.shape == theirs.shape == (40, 3, 224, 224)
    assert (ours - theirs).abs().max().item() == 0.0


@needs_shared_data
def test_clibd_embed_on_a_converted_folder_embeds_as_the_original(converted_224, tmp_path) -> None:
    """`clibd embed` of real photos and messy barcodes with the converted folder: the original's forward on
    its own inputs (its transform, its token ids), with no warning; text padded to its 20 tokens."""
    original, tokenizer, folder = converted_224
    photos = sorted(REAL_IMAGES.glob("valid_*.jpg"))[:6]
    for photo in photos:
        (tmp_path / "photos").mkdir(exist_ok=True)
        (tmp_path / "photos" / photo.name).write_bytes(photo.read_bytes())
    messy = ["aacatt" * 30 + "N" * 40, "AACATTATATTT---TATTTTTGGAGCTTGAGCAGGAATAGTAGGAACTTCTTTAAGAA" * 9]
    (tmp_path / "new.fasta").write_text("".join(f">b{i}\n{s}\n" for i, s in enumerate(messy)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind, inputs in (("images", tmp_path / "photos"), ("dna", tmp_path / "new.fasta")):
            options = ["--out", str(tmp_path / f"{kind}.npy"), "--device", "cpu", "--precision", "fp32"]
            options += ["--keep-flagged", "--max-ambiguous", "1", "--min-valid-nt", "1"]  # embed every input
            assert main(["embed", "--checkpoint", str(folder), f"--{kind}", str(inputs), *options]) == 0
    images = torch.stack([ORIGINAL_EVAL_VIEW(Image.open(p)) for p in photos])
    ids = torch.from_numpy(original_sequence_pipeline(messy))
    text = tokenizer(CORPUS, padding="max_length", max_length=20, truncation=True, return_tensors="pt")
    expected = original.embed(images, ids, dict(text))
    np.testing.assert_allclose(np.load(tmp_path / "images.npy"), expected["image"].numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.load(tmp_path / "dna.npy"), expected["dna"].numpy(), rtol=0, atol=2e-6)
    embedder = Embedder(folder, device="cpu")
    np.testing.assert_allclose(embedder.embed_text(CORPUS), expected["text"].numpy(), rtol=0, atol=2e-6)
