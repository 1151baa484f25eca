"""The DNA embedding switches (model.dna.head / pooling / attention_mask / prefix_token_id) against
oracles written from the original CLIBD's description: BertForMaskedLM, its decoder replaced by
Linear(hidden, embed_dim), ``logits.softmax(-1).mean(1)`` over all positions, no attention mask,
prefix token id 0."""

import dataclasses
import itertools
import json
from typing import get_args

import numpy as np
import pytest
import torch
from torch import nn

from clibd.config import ConfigError, DnaHead, DnaPooling, DnaTowerConfig, ModelConfig, load_config
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.models.clibd_model import CLIBDModel
from clibd.models.dna import DnaTower
from clibd.models.pooling import pool
from clibd.models.weights import CheckpointMismatchError
from tests.helpers.tiny_checkpoint import tiny_mlm

EMBED = 6
PAPER = dict(vocab="barcodebert_v1", head="mlm_softmax", pooling="mean_all", attention_mask=False, prefix_token_id=0)
DNA = DnaTowerConfig(k=3, max_nucleotides=15, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32)
SEQS = ["ACGTACGTTTGACCA", "ACGGTT", "TTTNGG"]


def _inputs(tokenizer: KmerTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(SEQS)
    return torch.from_numpy(enc.ids).long(), torch.from_numpy(enc.attention_mask).long()


def test_pool_mean_all_counts_padding_by_hand() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -50.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "mean_all").tolist() == [[26.0, -11.0]]  # (1+3+100+0)/4, (2+4-50+0)/4


def test_prefix_token_id_zero_gives_the_original_tokens() -> None:
    ours = KmerTokenizer(k=3, vocab="barcodebert_v1", max_nucleotides=9)
    original = KmerTokenizer(k=3, vocab="barcodebert_v1", max_nucleotides=9, prefix_id=0)
    # <MASK>=0 <CLS>=1 <UNK>=2, then k-mers in product order: ACG = 0*16+1*4+2 = 6 -> id 9; TTT = 63 -> id 66.
    assert ours(["ACGTTT"]).ids.tolist() == [[1, 9, 66, 2]]
    assert original(["ACGTTT"]).ids.tolist() == [[0, 9, 66, 2]]
    assert original(["ACGTTT"]).attention_mask.tolist() == [[1, 1, 1, 0]]
    assert original.settings()["prefix_id"] == 0
    with pytest.raises(ValueError, match="prefix_id=0: vocabulary 'barcodebert' has no prefix token \\(use v1\\)"):
        KmerTokenizer(k=3, vocab="barcodebert", prefix_id=0)


def test_mlm_softmax_mean_all_matches_the_original_forward(tmp_path) -> None:
    cfg = dataclasses.replace(DNA, **PAPER)
    tokenizer = KmerTokenizer(k=3, vocab="barcodebert_v1", max_nucleotides=15, prefix_id=0)
    mlm = tiny_mlm(tokenizer.vocab_size)
    torch.save({"model": {f"module.{k}": v for k, v in mlm.state_dict().items()}}, tmp_path / "bb.pth")
    tower = DnaTower(dataclasses.replace(cfg, pretrained=str(tmp_path / "bb.pth")), embed_dim=EMBED).eval()
    # The original: decoder replaced by a fresh Linear(hidden, embed_dim); copy ours into it.
    mlm.cls.predictions.decoder = nn.Linear(16, EMBED)
    mlm.cls.predictions.decoder.load_state_dict(tower.decoder.state_dict())
    ids, mask = _inputs(tower.tokenizer)
    assert ids[:, 0].tolist() == [0, 0, 0] and mask.sum(1).tolist() == [6, 3, 3]  # prefix + 5 / 2 / 2 k-mers
    with torch.no_grad():
        expected = mlm(ids).logits.softmax(dim=-1).mean(dim=1)  # no attention mask; all 6 positions
        got = tower(ids, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.shape == (3, EMBED) and torch.allclose(got.sum(dim=1), torch.ones(3))  # points on the simplex


def test_attention_mask_switch_changes_only_padded_rows() -> None:
    tokenizer = KmerTokenizer(k=3, max_nucleotides=15)
    masked = DnaTower(DNA).eval()
    unmasked = DnaTower(dataclasses.replace(DNA, attention_mask=False)).eval()
    unmasked.load_state_dict(masked.state_dict())
    ids, mask = _inputs(tokenizer)
    with torch.no_grad():
        a, b = masked(ids, mask), unmasked(ids, mask)
        hidden = masked.backbone(input_ids=ids).last_hidden_state  # attends to the padding too
    torch.testing.assert_close(a[0], b[0])  # the full-length row has no padding
    assert not torch.allclose(a[1], b[1], atol=1e-4)
    keep = mask.bool().unsqueeze(-1)
    torch.testing.assert_close(b, (hidden * keep).sum(1) / keep.sum(1))  # masked mean of the unmasked run


def test_model_with_mlm_softmax_head_has_no_projection_and_round_trips(tmp_path) -> None:
    cfg = ModelConfig(embed_dim=EMBED, dna=dataclasses.replace(DNA, **PAPER))
    cfg.image.enabled = cfg.text.enabled = False
    model = CLIBDModel(cfg).eval()
    assert isinstance(model.heads["dna"], nn.Identity)
    ids, mask = _inputs(model.dna_tokenizer)
    with torch.no_grad():
        emb = model.encode_dna(ids, mask)
        tower = model.towers["dna"](ids, mask)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(tower, dim=-1))
    model.save_pretrained(tmp_path / "m")
    loaded = CLIBDModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.dna_tokenizer.settings()["prefix_id"] == 0
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_dna(ids, mask), emb, rtol=0, atol=0)


def test_mlm_softmax_needs_the_checkpoint_mlm_head(tmp_path) -> None:
    tokenizer = KmerTokenizer(k=3, max_nucleotides=15)
    state = {k: v for k, v in tiny_mlm(tokenizer.vocab_size).state_dict().items() if not k.startswith("cls.")}
    torch.save(state, tmp_path / "encoder_only.pt")
    cfg = dataclasses.replace(DNA, head="mlm_softmax", pretrained=str(tmp_path / "encoder_only.pt"))
    with pytest.raises(CheckpointMismatchError, match=r"encoder_only.pt: dna.head=mlm_softmax needs the MLM head"):
        DnaTower(cfg, embed_dim=EMBED)


GRID = list(itertools.product(get_args(DnaHead), get_args(DnaPooling), (0, 1), (EMBED, 8)))


@pytest.mark.parametrize("head,pooling,layers,hidden", GRID)
def test_every_tower_setting_either_embeds_or_is_refused_at_load_naming_both_keys(
    tmp_path, head, pooling, layers, hidden
) -> None:
    """The whole grid of head x pooling x transformer layers x hidden size: a combination that cannot
    work is refused by the config check naming both keys; every other one embeds (unit vectors of
    embed_dim, finite) and saves and loads to the same embeddings."""
    overrides = [f"model.embed_dim={EMBED}", f"model.dna.hidden_size={hidden}", f"model.dna.num_layers={layers}"]
    overrides += [f"model.dna.head={head}", f"model.dna.pooling={pooling}", "model.dna.k=3"]
    overrides += ["model.dna.max_nucleotides=15", "model.dna.num_heads=2", "model.dna.intermediate_size=32"]
    overrides += ["model.image.enabled=false", "model.text.enabled=false"]
    impossible = {
        ("model.dna.pooling", "model.dna.head"): pooling == "kmer_bag" and head == "mlm_softmax",
        ("model.dna.hidden_size", "model.embed_dim"): head == "identity" and hidden != EMBED,
    }
    refused = [keys for keys, bad in impossible.items() if bad]
    if refused:
        with pytest.raises(ConfigError) as err:
            load_config(None, overrides)
        assert all(key in str(err.value) for key in refused[0]), str(err.value)
        return
    model = CLIBDModel(load_config(None, overrides).model).eval()
    assert isinstance(model.heads["dna"], nn.Identity) == (head in ("mlm_softmax", "identity"))
    ids, mask = _inputs(model.dna_tokenizer)
    with torch.no_grad():
        emb = model.encode_dna(ids, mask)
    assert emb.shape == (len(SEQS), EMBED) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(SEQS)))
    model.save_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(CLIBDModel.from_pretrained(tmp_path / "m").eval().encode_dna(ids, mask), emb)


def test_token_ids_of_the_original_pipeline_on_a_real_length_barcode() -> None:
    """660 nt, 5-mers, v1 vocabulary, prefix 0: 133 positions, as the original's sequence_pipeline."""
    tokenizer = KmerTokenizer(k=5, vocab="barcodebert_v1", max_nucleotides=660, prefix_id=0)
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), 600))
    ids = tokenizer([seq]).ids[0]
    padded = seq + "N" * 60
    kmers = [padded[i : i + 5] for i in range(0, 656, 5)]
    index = {"".join(p): i + 3 for i, p in enumerate(itertools.product("ACGT", repeat=5))}
    assert ids.tolist() == [0] + [index.get(kmer, 2) for kmer in kmers]


def test_our_pretrain_output_sets_the_tokenizer(tmp_path) -> None:
    settings = {"k": 3, "stride": 3, "vocab": "barcodebert_v1", "max_nucleotides": 15, "prefix_id": 0}
    tiny_mlm(KmerTokenizer(**settings).vocab_size).save_pretrained(tmp_path / "mlm")
    (tmp_path / "mlm" / "dna_tokenizer.json").write_text(json.dumps(settings))
    cfg = dataclasses.replace(DNA, k=4, pretrained=str(tmp_path / "mlm"))
    with pytest.warns(UserWarning, match=r"model.dna.vocab: 'barcodebert' -> 'barcodebert_v1'"):
        tower = DnaTower(cfg)
    assert tower.tokenizer.settings() == {**settings, "cleaning": "clibd"} and (cfg.k, cfg.prefix_token_id) == (3, 0)
