"""The DNA recipe's pieces (configs/bench/dna_recipe.yaml): the bag-of-k-mers tower and its frame robustness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clibd.config import DnaTowerConfig
from clibd.eval.dna_benchmark import kmer_count_vectors
from clibd.models.dna import DnaTower

BAG = DnaTowerConfig(
    k=3,
    stride=1,
    max_nucleotides=30,
    hidden_size=8,
    num_layers=0,
    num_heads=2,
    intermediate_size=16,
    pooling="kmer_bag",
)


def _embed(tower: DnaTower, seqs: list[str]) -> torch.Tensor:
    ids, mask = tower.tokenizer(seqs)
    with torch.no_grad():
        return tower(torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long))


def test_bag_without_layers_is_the_mean_embedding_of_the_counted_kmers() -> None:
    torch.manual_seed(0)
    tower = DnaTower(BAG)
    seqs = ["ACGTACGTTGCA", "TTTNACGGA", "ACGTAC-GTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTGG"]
    # Oracle: overlapping 3-mer counts (k-mers with N left out, the sequence cut at 30) times the table.
    counts = kmer_count_vectors([s.replace("-", "")[:30] for s in seqs], 3).toarray()
    table = tower.backbone.embeddings.word_embeddings.weight.detach().numpy()[tower.tokenizer.kmer_offset :]
    expected = counts @ table / counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_embed(tower, seqs).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_bag_does_not_depend_on_the_reading_frame() -> None:
    torch.manual_seed(0)
    tower = DnaTower(BAG)
    read = "ACGTTGCAAGGCTTACGA"
    # The same read trimmed one or two bases earlier keeps all but its first k-mers: near-equal.
    shifted = _embed(tower, [read, "T" + read, "GT" + read])
    cos = torch.nn.functional.cosine_similarity(shifted[0:1], shifted[1:])
    assert cos.min() > 0.9
    # Non-overlapping 3-mers of the same reads share no token across frames: far apart.
    frames = DnaTower(DnaTowerConfig(**{**BAG.__dict__, "stride": 3}))
    framed = _embed(frames, [read, "T" + read])
    assert torch.nn.functional.cosine_similarity(framed[0:1], framed[1:]).item() < 0.6


def test_bag_adds_the_transformer_mean_when_it_has_layers() -> None:
    torch.manual_seed(0)
    tower = DnaTower(DnaTowerConfig(**{**BAG.__dict__, "num_layers": 1})).eval()  # no dropout
    ids, mask = (torch.as_tensor(a, dtype=torch.long) for a in tower.tokenizer(["ACGTACGTTGCA"]))
    with torch.no_grad():
        hidden = tower.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = hidden[mask.bool()].mean(0) + tower._kmer_bag(ids, mask)[0]
        torch.testing.assert_close(tower(ids, mask)[0], expected)


def test_unknown_pooling_is_named() -> None:
    with pytest.raises(ValueError, match="dna.pooling='max'"):
        DnaTower(DnaTowerConfig(**{**BAG.__dict__, "pooling": "max"}))
