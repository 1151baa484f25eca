"""Ranks share ``data.cache_dir``: two processes that tokenise the same barcodes into a
fresh cache at the same moment must both succeed (each writes its own temporary file).
Found by the 2-rank launches of test_distributed_faults.py: rank 1 died at start-up with
FileNotFoundError when rank 0 had renamed the shared temporary file away."""

from __future__ import annotations

import numpy as np
import pytest

from clibd.data.dna_tokenizer import KmerTokenizer

pytestmark = pytest.mark.reliability

BARCODES = ["ACGTACGTAA", "TTGACCANNA", "acgt-gtca"]


def test_a_writer_interleaved_with_another_on_a_fresh_cache_succeeds(tmp_path, monkeypatch) -> None:
    tokenizer = KmerTokenizer(k=3, max_nucleotides=12)
    real_savez = np.savez
    other_ran = []

    def savez(file, **arrays):
        real_savez(file, **arrays)
        if not other_ran:  # the other rank writes and renames while this one is between its two steps
            other_ran.append(True)
            tokenizer.encode_cached(BARCODES, tmp_path)

    monkeypatch.setattr(np, "savez", savez)
    encoding = tokenizer.encode_cached(BARCODES, tmp_path)
    expected = tokenizer(BARCODES)
    assert np.array_equal(encoding.ids, expected.ids) and other_ran
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []
    cached = tokenizer.encode_cached(BARCODES, tmp_path)
    assert np.array_equal(cached.ids, expected.ids) and np.array_equal(cached.attention_mask, expected.attention_mask)
