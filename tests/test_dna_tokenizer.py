import numpy as np
import pandas as pd
import pytest

from clibd import KmerTokenizer
from tests.data_paths import BOLD_4K, BOLD_NL, needs_shared_data
from tests.oracles import kmer_tokenize_reference


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
