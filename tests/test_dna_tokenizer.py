import numpy as np
import pandas as pd
import pytest

from clibd import KmerTokenizer
from tests.data_paths import BOLD_4K, BOLD_NL, needs_shared_data
from tests.oracles import kmer_tokenize_reference, original_sequence_pipeline


def test_exact_tokens_barcodebert_layout() -> None:
    tok = KmerTokenizer(k=2, vocab="barcodebert", max_nucleotides=8)
    ids, mask = tok(["ACGTNA", "tt"])
    # [MASK]=0, [UNK]=1, then AA=2, AC=3, ..., TT=17 in itertools.product order.
    assert ids.tolist() == [[3, 13, 1, 1], [17, 1, 1, 1]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert tok.vocab[:4] == ["[MASK]", "[UNK]", "AA", "AC"] and tok.vocab_size == 18


def test_exact_tokens_v1_layout_has_cls_prefix() -> None:
    tok = KmerTokenizer(k=5, vocab="barcodebert_v1", max_nucleotides=660)
    ids, mask = tok(["AAAAAC"])
    assert ids.shape == (1, 133)  # 132 k-mers + <CLS>, as the CLIBD checkpoint expects
    assert ids[0, :3].tolist() == [1, 3, 2]  # <CLS>, AAAAA, then "C" + N padding -> <UNK>
    assert mask[0, :4].tolist() == [1, 1, 1, 0]
    assert tok.vocab[:3] == ["<MASK>", "<CLS>", "<UNK>"]


def test_cleaning_gaps_whitespace_case_iupac_and_trailing_n() -> None:
    tok = KmerTokenizer(k=3, max_nucleotides=12)
    ids, mask = tok(["ac-g t\nRCA.GTNNNN"])
    clean, _ = tok(["ACGTRCAGT"])
    assert np.array_equal(ids, clean)
    assert mask.tolist() == [[1, 1, 1, 0]]  # trailing Ns count as padding
    assert ids[0, 1] == tok.unk_id  # TRC holds an IUPAC code


def test_empty_and_long_sequences() -> None:
    tok = KmerTokenizer(k=4, max_nucleotides=16)
    ids, mask = tok(["", "A" * 100_000, "é✓"])
    assert mask[0].sum() == 0 and (ids[0] == tok.unk_id).all()
    assert mask[1].sum() == 4 and (ids[1] == tok.kmer_offset).all()
    assert ids[2, 0] == tok.unk_id and mask[2].tolist() == [1, 0, 0, 0]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown DNA vocabulary layout 'bert'"):
        KmerTokenizer(vocab="bert")
    with pytest.raises(ValueError, match="k <= max_nucleotides"):
        KmerTokenizer(k=8, max_nucleotides=4)


@pytest.mark.parametrize(
    "k,vocab,stride",
    [(4, "barcodebert", None), (5, "barcodebert_v1", None), (8, "barcodebert", None), (6, "barcodebert", 3)],
)
def test_matches_oracle_on_random_dirty_sequences(k: int, vocab: str, stride: int | None) -> None:
    rng = np.random.default_rng(k)
    alphabet = np.array(list("ACGTACGTACGTacgtNNRY- .\n"))
    seqs = ["".join(rng.choice(alphabet, size=rng.integers(0, 120))) for _ in range(300)]
    ids, mask = KmerTokenizer(k=k, vocab=vocab, max_nucleotides=96, stride=stride)(seqs)
    ref_ids, ref_mask = kmer_tokenize_reference(seqs, k, vocab, 96, stride)
    assert np.array_equal(ids, ref_ids) and np.array_equal(mask, ref_mask)


@needs_shared_data
@pytest.mark.parametrize("k,vocab", [(4, "barcodebert"), (5, "barcodebert_v1")])
def test_matches_oracle_on_every_real_barcode(k: int, vocab: str) -> None:
    seqs = pd.read_csv(BOLD_4K, sep="\t")["nucleotides"].tolist()
    seqs += pd.read_csv(BOLD_NL, sep="\t", low_memory=False)["nuc"].dropna().tolist()
    ids, mask = KmerTokenizer(k=k, vocab=vocab)(seqs)
    ref_ids, ref_mask = kmer_tokenize_reference(seqs, k, vocab, 660)
    assert np.array_equal(ids, ref_ids) and np.array_equal(mask, ref_mask)


def test_encode_cached_reuses_the_file_and_rebuilds_a_corrupt_one(tmp_path, monkeypatch) -> None:
    tok = KmerTokenizer(k=4, max_nucleotides=32)
    first = tok.encode_cached(["ACGTACGT", "TTTT"], tmp_path)
    files = list(tmp_path.glob("dna-*.npz"))
    assert len(files) == 1

    def fail(*args):
        raise AssertionError("re-tokenised although cached")

    with monkeypatch.context() as patch:
        patch.setattr(KmerTokenizer, "_encode_chunk", fail)
        again = tok.encode_cached(["ACGTACGT", "TTTT"], tmp_path)
    assert np.array_equal(again.ids, first.ids) and np.array_equal(again.attention_mask, first.attention_mask)

    files[0].write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        rebuilt = tok.encode_cached(["ACGTACGT", "TTTT"], tmp_path)
    assert np.array_equal(rebuilt.ids, first.ids)

    other = KmerTokenizer(k=4, max_nucleotides=32, vocab="barcodebert_v1").encode_cached(["ACGTACGT", "TTTT"], tmp_path)
    assert other.ids.shape[1] == first.ids.shape[1] + 1 and len(list(tmp_path.glob("dna-*.npz"))) == 2


# Barcodes as they come: lower case, alignment gaps, N padding at either end, IUPAC codes, whitespace,
# over-long, non-ASCII (one character each, as in the original's Python strings).
MESSY = [
    "aacatt" * 30,
    "AACATTATATTTTATTTTTGGAGCTTGAGCAGGAATAGTAGGAACTTC" * 4,
    "AACATTATATTT---TATTTTTGGAGC--TTGAGCAGGAATAGTAGGAACT" * 3,
    "NNNNNACATTATATTTTATTTTTGGAGCTTGAGCAGG" + "N" * 40,
    "AACATTatatTTTATTTTTGGAGCTTGAGCAGGNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN",
    "AACATTRYATTTTATTTTTGG AGCTTGA\nGCAGG.AATAGT",
    "ACGT" * 200,
    "ACGTé✓ACGTACGTA",
    "",
]


def original_tokenizer() -> KmerTokenizer:
    return KmerTokenizer(k=5, vocab="barcodebert_v1", max_nucleotides=660, prefix_id=0, cleaning="original")


def test_original_cleaning_gives_the_originals_token_ids() -> None:
    ids, mask = original_tokenizer()(MESSY)
    expected = original_sequence_pipeline(MESSY)
    assert ids.shape == expected.shape == (len(MESSY), 133)
    assert np.array_equal(ids, expected)  # max abs difference 0
    # Trailing Ns stay part of the barcode: the mask covers them (the original has no mask at all).
    assert mask[4].sum() == 1 + len(MESSY[4]) // 5
    # Our cleaning reads the same barcodes differently: case, gaps and whitespace are what differ.
    ours = KmerTokenizer(k=5, vocab="barcodebert_v1", max_nucleotides=660, prefix_id=0)(MESSY).ids
    differing = [i for i in range(len(MESSY)) if not np.array_equal(ours[i], expected[i])]
    assert differing == [0, 2, 4, 5]  # lower case, gaps, lower case, gaps/whitespace; N padding is the same


def test_original_lower_case_kmers_and_gaps_are_unk() -> None:
    tok = KmerTokenizer(k=3, vocab="barcodebert_v1", max_nucleotides=9, prefix_id=0, cleaning="original")
    ids, _ = tok(["acgACG", "AC-GTA", "ACGTNN"])
    acg = tok.kmer_offset + int("012", 4)  # A=0, C=1, G=2
    assert ids.tolist() == [
        [0, tok.unk_id, acg, tok.unk_id],
        [0, tok.unk_id, tok.kmer_offset + int("230", 4), tok.unk_id],  # "AC-" UNK, "GTA" (G=2 T=3 A=0), padding
        [0, acg, tok.unk_id, tok.unk_id],
    ]
    assert tok.settings()["cleaning"] == "original"
    with pytest.raises(ValueError, match=r"DNA cleaning 'raw': choose one of \('clibd', 'original'\)"):
        KmerTokenizer(cleaning="raw")


@needs_shared_data
def test_original_cleaning_on_real_messy_bold_barcodes() -> None:
    """515 real BOLD records (56 with gaps, 4 with lower-case bases): every token id the original's."""
    barcodes = pd.read_csv(BOLD_NL, sep="\t", usecols=["nuc"], dtype=str)["nuc"].fillna("").tolist()
    ids, _ = original_tokenizer()(barcodes)
    assert np.array_equal(ids, original_sequence_pipeline(barcodes))
    assert sum("-" in b for b in barcodes) == 56 and sum(any(c.islower() for c in b) for b in barcodes) == 4
