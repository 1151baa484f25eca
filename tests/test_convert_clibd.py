"""``clibd convert-clibd``: a state dict with the original CLIBD's key names and shapes (built here at
tiny sizes by tests/helpers/original_clibd.py) becomes a CLIBDModel whose embeddings equal the
original's forward pass on the same inputs."""

import pytest
import torch

from clibd.cli import main
from clibd.config import TextTowerConfig
from clibd.models.clibd_model import CLIBDModel
from clibd.models.text import build_text_tokenizer
from clibd.models.weights import CheckpointMismatchError
from tests.helpers.original_clibd import OriginalCLIBD

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


def test_tower_missing_from_the_checkpoint_is_named(tmp_path) -> None:
    tokenizer = build_text_tokenizer(TextTowerConfig(name=None, vocab_size=80), CORPUS)
    tokenizer.save_pretrained(tmp_path / "tok")
    _save(OriginalCLIBD(dna_vocab=3 + 4**5, text_vocab=len(tokenizer), text=False), tmp_path / "best.pth", False, False)
    _their_yaml(tmp_path / "their.yaml", True, tmp_path / "tok")
    with pytest.raises(
        CheckpointMismatchError,
        match=r"best.pth: holds towers \['dna', 'image'\], the yaml "
        r"describes \['dna', 'image', 'text'\]",
    ):
        _convert(tmp_path, tmp_path / "out")


def test_text_tokenizer_is_never_downloaded(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    _save(OriginalCLIBD(dna_vocab=3 + 4**5, text_vocab=50), tmp_path / "best.pth", False, False)
    _their_yaml(tmp_path / "their.yaml", True, "prajjwal1/bert-small")
    with pytest.raises(
        FileNotFoundError,
        match="'prajjwal1/bert-small' is neither a local directory nor in the "
        "Hugging Face cache; pass --text-tokenizer DIR",
    ):
        _convert(tmp_path, tmp_path / "out")
