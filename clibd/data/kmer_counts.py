"""K-mer count matrices of barcodes (the k-mer baseline, the spectral k-mer table). Apart from the
tokenizer because scipy's import (~0.2 s) is not for the commands that only tokenise."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from clibd.data.dna_tokenizer import KmerTokenizer


def token_counts(barcodes: Sequence[str], tokenizer: KmerTokenizer) -> sp.csr_matrix:
    """``[n, vocab]`` counts of each barcode's real k-mer tokens (special and UNK tokens, and so
    k-mers holding N or another non-ACGT letter, left out)."""
    enc = tokenizer(barcodes)
    valid = (enc.attention_mask == 1) & (enc.ids >= tokenizer.kmer_offset)
    rows, cols = np.nonzero(valid)[0], enc.ids[valid].astype(np.int64)
    ones = np.ones(len(rows), dtype=np.float32)
    # coo -> csr sums the duplicates (a k-mer repeated in one barcode)
    return sp.coo_matrix((ones, (rows, cols)), shape=(len(barcodes), tokenizer.vocab_size)).tocsr()
