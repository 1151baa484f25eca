"""Any string at all gives a clean, oracle-identical tokenisation (issue 7, item 4)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clibd import KmerTokenizer
from tests.helpers.fuzz import FUZZ
from tests.oracles import kmer_tokenize_reference

pytestmark = [pytest.mark.reliability, pytest.mark.fuzz]

dna_like = st.text(alphabet=st.sampled_from(list("ACGTacgtNRYKMSWBDHV-. \t\r\n")), max_size=200)
anything = st.text(max_size=200)  # unicode, control characters, surrogates excluded by hypothesis


@FUZZ
@given(st.lists(st.one_of(dna_like, anything), min_size=1, max_size=8), st.integers(1, 6))
def test_any_strings_match_the_oracle(sequences: list[str], k: int) -> None:
    tok = KmerTokenizer(k=k, max_nucleotides=48)
    ids, mask = tok(sequences)
    ref_ids, ref_mask = kmer_tokenize_reference(sequences, k, "barcodebert", 48)
    assert np.array_equal(ids, ref_ids) and np.array_equal(mask, ref_mask)
    assert ids.min() >= 0 and ids.max() < tok.vocab_size


def test_100kb_sequence_is_truncated_not_slow() -> None:
    seq = "ACGT" * 25_000
    ids, mask = KmerTokenizer(k=4)([seq])
    assert ids.shape == (1, 165) and mask.all()
