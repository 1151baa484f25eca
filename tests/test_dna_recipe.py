"""The DNA recipe's pieces (configs/bench/dna_recipe.yaml): the bag-of-k-mers tower, its frame robustness,
the k-mer table fitted without labels, and the identity head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.preprocessing import normalize

from clibd.cli import main as cli_main
from clibd.config import (
    ConfigError,
    DnaTowerConfig,
    ImageTowerConfig,
    ModelConfig,
    TextTowerConfig,
    check_dna_tower,
    load_config,
)
from clibd.data.dna_tokenizer import KmerTokenizer, encode_sequence, reading_frame
from clibd.data.kmer_counts import token_counts
from clibd.eval.dna_benchmark import kmer_count_vectors
from clibd.models.clibd_model import CLIBDModel
from clibd.models.dna import DnaTower
from clibd.train.pretrain_dna.spectral import (
    block_scales,
    column_weights,
    idf_weights,
    pattern_blocks,
    spectral_table,
)

REPO = Path(__file__).resolve().parents[1]

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


# ---- the k-mer table fitted without labels (pretrain.objective: kmer_spectral) ----------------


def _tfidf_cosines(counts: np.ndarray) -> np.ndarray:
    """Oracle: scikit-learn's tf-idf (smoothed idf, L2 rows), then cosine similarities."""
    weighted = TfidfTransformer(smooth_idf=True, norm="l2").fit_transform(counts).toarray()
    return weighted @ weighted.T


def _cosines(x: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def test_idf_is_scikit_learns_smoothed_idf_and_zero_for_absent_columns() -> None:
    counts = sp.csr_matrix(np.array([[2, 0, 1, 0], [0, 0, 3, 1], [1, 0, 0, 1]], dtype=np.float32))
    held = np.array([True, False, True, True])
    want = TfidfTransformer(smooth_idf=True).fit(counts[:, held]).idf_
    np.testing.assert_allclose(idf_weights(counts)[held], want, rtol=1e-6)
    assert idf_weights(counts)[1] == 0.0


def test_full_rank_table_reproduces_tfidf_cosines_and_a_narrow_one_the_top_singular_space() -> None:
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(0.3, size=(12, 40)).astype(np.float32))
    table, fit = spectral_table(counts, width=16, seed=0)  # 12 rows: rank 12, 4 zero columns
    assert table.shape == (40, 16) and fit["rank"] == 12 and not table[:, 12:].any()
    assert fit["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(_cosines(counts @ table), _tfidf_cosines(counts), atol=1e-5)
    # Width 3: the table's columns span the top 3 right singular vectors of the tf-idf rows.
    narrow, fit = spectral_table(counts, width=3, seed=0)
    weighted = TfidfTransformer(smooth_idf=True, norm="l2").fit_transform(counts).toarray()
    top = np.linalg.svd(weighted)[2][:3].T  # [40, 3]
    idf = idf_weights(counts)
    unweighted = np.divide(narrow, idf[:, None], out=np.zeros_like(narrow), where=idf[:, None] > 0)
    np.testing.assert_allclose(unweighted @ unweighted.T, top @ top.T, atol=1e-4)
    assert 0 < fit["explained_variance"] < 1


def _fit_spectral_table(tmp_path: Path, seed: int, length: int, extra: list[str]) -> tuple[list[str], str, list[str]]:
    """``clibd pretrain-dna`` fits a 3-mer bag's table (``extra`` settings) on 6 random barcodes of one species
    into ``tmp_path / "table"``; returns the barcodes, the config and its arguments."""
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("ACGT"), length)) for _ in range(6)]
    tsv = tmp_path / "barcodes.tsv"
    species = {"order_name": "Diptera", "family_name": "Muscidae", "genus_name": "Musca", "bin_uri": "BOLD:AAA0001"}
    ids = [f"P{i}" for i in range(len(seqs))]
    pd.DataFrame({"processid": ids, **species, "species_name": "Musca domestica", "nucleotides": seqs}).to_csv(
        tsv, sep="\t", index=False
    )
    bag = ["model.dna.k=3", "model.dna.max_nucleotides=60", "model.dna.hidden_size=8", "model.dna.num_layers=0"]
    bag += ["model.dna.num_heads=2", "model.dna.pooling=kmer_bag", *extra]
    config = str(REPO / "configs" / "pretrain_dna" / "bold_tsv.yaml")
    args = [f"data.root={tsv}", f"pretrain.out_dir={tmp_path / 'table'}", "pretrain.objective=kmer_spectral", *bag]
    assert cli_main(["pretrain-dna", "--config", config, *args]) == 0
    return seqs, config, args


def test_pretrain_dna_kmer_spectral_writes_a_tower_that_embeds_as_tfidf(tmp_path: Path) -> None:
    seqs, config, args = _fit_spectral_table(tmp_path, seed=1, length=40, extra=["model.dna.stride=1"])
    out = tmp_path / "table"
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["objective"] == "kmer_spectral" and summary["rank"] == 6 and summary["steps"] == 0
    tower = DnaTower(load_config(config, [*args, f"model.dna.pretrained={out}"]).model.dna)
    assert tower.backbone.embeddings.word_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.5)
    embedded = _embed(tower, seqs).numpy()
    np.testing.assert_allclose(_cosines(embedded), _tfidf_cosines(kmer_count_vectors(seqs, 3)), atol=1e-5)


def test_identity_head_makes_the_bag_the_embedding_and_names_a_width_mismatch() -> None:
    cfg = DnaTowerConfig(**{**BAG.__dict__, "head": "identity"})
    off = {"image": ImageTowerConfig(enabled=False), "text": TextTowerConfig(enabled=False)}
    with pytest.raises(ValueError, match=r"model.dna.hidden_size \(8\) must equal model.embed_dim \(16\)"):
        CLIBDModel(ModelConfig(embed_dim=16, dna=cfg, **off))
    torch.manual_seed(0)
    model = CLIBDModel(ModelConfig(embed_dim=8, dna=cfg, **off))
    assert isinstance(model.heads["dna"], torch.nn.Identity)
    ids, mask = (torch.as_tensor(a, dtype=torch.long) for a in model.dna_tokenizer(["ACGTACGTTGCA", "TTGACCA"]))
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.towers["dna"](ids, mask), dim=-1)
        torch.testing.assert_close(model.encode_dna(ids, mask), want)


def test_init_kmer_spectral_fits_the_table_on_the_training_barcodes_when_the_model_is_built() -> None:
    from clibd.train.build import build_model

    rng = np.random.default_rng(2)
    seqs = ["".join(rng.choice(list("ACGT"), 40)) for _ in range(5)]
    bag = ["model.dna.k=3", "model.dna.stride=1", "model.dna.max_nucleotides=60", "model.dna.hidden_size=8"]
    bag += ["model.dna.num_layers=0", "model.dna.num_heads=2", "model.dna.pooling=kmer_bag", "model.dna.head=identity"]
    off = ["model.embed_dim=8", "model.image.enabled=false", "model.text.enabled=false"]
    cfg = load_config(None, [*bag, *off, "model.dna.init=kmer_spectral"])
    model = build_model(cfg, pd.DataFrame({"dna_barcode": seqs + [seqs[0]]}), None)  # a duplicate: fitted once
    ids, mask = (torch.as_tensor(a, dtype=torch.long) for a in model.dna_tokenizer(seqs))
    with torch.no_grad():
        embedded = model.encode_dna(ids, mask).numpy()
    np.testing.assert_allclose(embedded @ embedded.T, _tfidf_cosines(kmer_count_vectors(seqs, 3)), atol=1e-5)
    with pytest.raises(ValueError, match="unset model.dna.pretrained"):
        build_model(
            load_config(None, [*bag, *off, "model.dna.init=kmer_spectral", "model.dna.pretrained=x"]), None, None
        )


# ---- codon-aware tokens: k-mer patterns and the reading frame (model.dna.kmer_patterns, reading_frame) ------


def _kmer_id(kmer: str) -> int:
    return int(kmer.translate(str.maketrans("ACGT", "0123")), 4)


def test_spaced_pattern_reads_the_bases_under_its_ones() -> None:
    tok = KmerTokenizer(k=4, stride=1, max_nucleotides=8, patterns=["11011"])
    assert tok.n_kmers == 4 and tok.vocab_size == 2 + 4**4
    ids, mask = tok(["ACGTTGCA", "ACGTTG"])
    # Windows of 5 bases, the third skipped: ACGTT -> ACTT, CGTTG -> CGTG, GTTGC -> GTGC, TTGCA -> TTCA.
    assert ids[0].tolist() == [2 + _kmer_id(k) for k in ("ACTT", "CGTG", "GTGC", "TTCA")]
    # The second read's last two windows run into the N padding: UNK, still positions of the read.
    assert ids[1].tolist() == [2 + _kmer_id("ACTT"), 2 + _kmer_id("CGTG"), tok.unk_id, tok.unk_id]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert tok.settings() == {
        "k": 4,
        "stride": 1,
        "vocab": "barcodebert",
        "max_nucleotides": 8,
        "prefix_id": None,
        "cleaning": "clibd",
        "patterns": ["11011"],
    }


@pytest.mark.parametrize(
    ("pattern", "problem"), [("1101", "needs k=4 '1's"), ("011011", "'1' at both ends"), ("11x11", "needs k=4")]
)
def test_a_bad_pattern_is_named(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"k-mer pattern '{pattern}': .*{problem}"):
        KmerTokenizer(k=4, patterns=[pattern])


def test_reading_frame_is_the_frame_with_fewest_stop_codons() -> None:
    seqs = ["TAATAGCCC", "CTAACTAGC", "TAGCTAACC"]
    codes = np.frombuffer(b"".join(encode_sequence(seq) for seq in seqs), dtype=np.uint8).reshape(3, 9)
    # TAATAGCCC: frame 0 reads TAA TAG CCC (2 stops), frames 1 and 2 none: the earliest, 1.
    # CTAACTAGC: frame 0 reads CTA ACT AGC (none): 0. TAGCTAACC: TAG CTA ACC (1), AGC TAA (1), GCT AAC (0): 2.
    assert reading_frame(codes).tolist() == [1, 0, 2]


def test_codon_tokens_start_at_each_codon_in_frame_one_block_per_pattern() -> None:
    tok = KmerTokenizer(k=4, stride=3, max_nucleotides=14, patterns=["1111", "11011"], reading_frame=True)
    assert (tok.starts, tok.n_kmers, tok.vocab_size) == (4, 8, 2 + 2 * 256)
    assert tok.vocab[2 + 256] == "AAAA/11011" and tok.settings()["reading_frame"] is True
    ids, mask = tok(["CTAACTAGCAAT", "TAATAGCCCAAAGG"])
    # Read 1 is in frame 0: codons at 0, 3, 6, 9 (the last window runs into the padding: UNK).
    # Read 2 is in frame 1 (TAA TAG in frame 0): it starts at its second base, AATAGCCCAAAGG.
    contiguous = [["CTAA", "ACTA", "AGCA", None], ["AATA", "AGCC", "CCAA", "AAGG"]]
    spaced = [["CTAC", "ACAG", "AGAA", None], ["AAAG", "AGCC", "CCAA", None]]
    for row in range(2):
        want = [tok.unk_id if k is None else 2 + _kmer_id(k) for k in contiguous[row]]
        want += [tok.unk_id if k is None else 2 + 256 + _kmer_id(k) for k in spaced[row]]
        assert ids[row].tolist() == want
    assert mask.tolist() == [[1] * 8, [1] * 8]
    # A read too short for a whole token keeps its positions masked out beyond its length.
    _, short = tok(["TTAC"])
    assert short.tolist() == [[1, 1, 0, 0, 1, 1, 0, 0]]


def test_pattern_blocks_are_scaled_to_one_typical_size_then_weighted() -> None:
    tok = KmerTokenizer(k=1, stride=1, max_nucleotides=6, patterns=["1", "1", "1"])
    blocks = pattern_blocks(tok)
    assert blocks.tolist() == [-1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert pattern_blocks(KmerTokenizer(k=1)) is None
    # Block 0 norms 3 and 5 (median 4); block 1 only the first row holds (norm 2); block 2 no row: scale 0.
    rows = [[0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0], [0, 0, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    weighted = sp.csr_matrix(np.array(rows, dtype=np.float32))
    np.testing.assert_allclose(block_scales(weighted, blocks), [1, 1, *[1 / 4] * 4, *[1 / 2] * 4, *[0] * 4])
    counts = sp.csr_matrix(np.array([[1, 0, 1, 1, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0]] * 2, dtype=np.float32))
    scaled = column_weights(counts, blocks, [1.0, 0.5, 2.0])
    unweighted = column_weights(counts, blocks)
    np.testing.assert_allclose(scaled[6:10], 0.5 * unweighted[6:10])
    np.testing.assert_allclose(scaled[10:], 2.0 * unweighted[10:])
    with pytest.raises(ValueError, match="2 k-mer pattern weights for 3 patterns"):
        column_weights(counts, blocks, [1.0, 0.5])


def test_fitted_table_of_two_patterns_embeds_as_their_weighted_tfidf() -> None:
    rng = np.random.default_rng(3)
    seqs = ["".join(rng.choice(list("ACGT"), 30)) for _ in range(6)]
    tok = KmerTokenizer(k=2, stride=1, max_nucleotides=30, patterns=["11", "101"], reading_frame=True)
    counts = token_counts(seqs, tok)
    table, fit = spectral_table(counts, width=8, seed=0, column_block=pattern_blocks(tok), block_weights=[1, 0.6])
    assert fit["rank"] == 6
    # Oracle: idf times the block scales and weights, L2 rows; the full-rank table keeps their cosines.
    weights = column_weights(counts, pattern_blocks(tok), [1, 0.6])
    oracle = normalize(counts @ sp.diags(weights)).toarray()
    np.testing.assert_allclose(_cosines(counts @ table), oracle @ oracle.T, atol=1e-5)


def _codon_model_config(**dna: object) -> ModelConfig:
    codon = {"k": 3, "stride": 3, "head": "identity", "kmer_patterns": ["111", "1101"], "reading_frame": True}
    cfg = DnaTowerConfig(**{**BAG.__dict__, **codon, **dna})
    return ModelConfig(embed_dim=8, dna=cfg, image=ImageTowerConfig(enabled=False), text=TextTowerConfig(enabled=False))


def test_codon_tower_embeds_the_mean_of_both_patterns_rows_and_survives_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CLIBDModel(_codon_model_config())
    tower = model.towers["dna"]
    seqs = ["ATGGCTAAACGTTGA", "CCATGGCTAAACG"]
    embedded = _embed(tower, seqs).numpy()
    assert embedded.shape == (2, 8)
    # Oracle: the tokenizer's token counts (both patterns' blocks) times the table, over the token count.
    counts = token_counts(seqs, tower.tokenizer).toarray()
    table = tower.backbone.embeddings.word_embeddings.weight.detach().numpy()
    np.testing.assert_allclose(embedded, counts @ table / counts.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    model.save_pretrained(tmp_path / "m")
    loaded = CLIBDModel.from_pretrained(tmp_path / "m")
    assert loaded.dna_tokenizer.settings() == tower.tokenizer.settings()
    assert loaded.cfg.dna.kmer_patterns == ["111", "1101"] and loaded.cfg.dna.reading_frame
    np.testing.assert_allclose(_embed(loaded.towers["dna"], seqs).numpy(), embedded, rtol=1e-6)


def test_pattern_weights_must_match_the_patterns() -> None:
    with pytest.raises(ConfigError, match="kmer_pattern_weights has 3 weights for 2 model.dna.kmer_patterns"):
        check_dna_tower(_codon_model_config(kmer_pattern_weights=[1.0, 0.5, 0.2]))


def test_pretrain_dna_fits_a_codon_table_that_a_config_loads_with_its_tokenizer(tmp_path: Path) -> None:
    codon = ["model.dna.stride=3", "model.dna.kmer_patterns=['111','1101']", "model.dna.reading_frame=true"]
    seqs, config, args = _fit_spectral_table(tmp_path, 4, 45, [*codon, "model.dna.kmer_pattern_weights=[1.0,0.6]"])
    out = tmp_path / "table"
    saved = json.loads((out / "dna_tokenizer.json").read_text())
    assert saved["patterns"] == ["111", "1101"] and saved["reading_frame"] is True
    # A config that names the checkpoint but not its patterns adopts them from it (with a warning each).
    plain = [a for a in args if "kmer_pattern" not in a and "reading_frame" not in a]
    with pytest.warns(UserWarning, match="model.dna.kmer_patterns"):
        tower = DnaTower(load_config(config, [*plain, f"model.dna.pretrained={out}"]).model.dna)
    assert tower.tokenizer.patterns == ["111", "1101"] and tower.tokenizer.reading_frame
    tok = KmerTokenizer(k=3, stride=3, max_nucleotides=60, patterns=["111", "1101"], reading_frame=True)
    counts = token_counts(seqs, tok)
    oracle = normalize(counts @ sp.diags(column_weights(counts, pattern_blocks(tok), [1.0, 0.6]))).toarray()
    np.testing.assert_allclose(_cosines(_embed(tower, seqs).numpy()), oracle @ oracle.T, atol=1e-5)
