"""Ranks share ``data.cache_dir`` and the output folder: two processes that tokenise the
same barcodes into a fresh cache, or probe OUT for writability, at the same moment must
both succeed (each uses its own temporary file). Both found by the 2-rank launches of
test_distributed_faults.py: rank 1 died at start-up with FileNotFoundError when rank 0 had
renamed or deleted the shared temporary file."""

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


def test_ranks_probing_one_output_folder_at_once_all_pass(tmp_path, monkeypatch) -> None:
    """Every rank checks at start-up that OUT is writable; one rank's probe must not remove another's."""
    from pathlib import Path

    from clibd.train.build import check_writable

    real_write = Path.write_bytes
    other_ran = []

    def write_bytes(self, data):
        written = real_write(self, data)
        if self.name.startswith(".write_probe") and not other_ran:
            other_ran.append(True)
            check_writable(self.parent)  # the other rank, between this one's write and unlink
        return written

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    check_writable(tmp_path / "out")
    assert other_ran and list((tmp_path / "out").iterdir()) == []
