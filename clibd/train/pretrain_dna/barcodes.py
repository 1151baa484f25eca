"""Pretraining data: de-duplicated barcodes, pre-tokenised once at every start offset."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from clibd.data.dna_tokenizer import KmerTokenizer, encode_sequence

# Tokenizer nucleotide codes back to letters (4 = any other letter, which stays UNK).
_LETTERS = bytes.maketrans(bytes(range(6)), b"ACGTXN")


@dataclass
class DedupReport:
    records: int  # rows read
    missing: int  # no barcode: skipped
    too_short: int  # fewer than 2k-1 nucleotides after cleaning (no k-mer at every offset): skipped
    duplicates: int  # identical to an earlier barcode after cleaning: removed
    unique: int  # barcodes kept

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.records} records -> {self.unique} unique barcodes "
            f"({self.duplicates} duplicates removed, {self.missing} without barcode and "
            f"{self.too_short} too short skipped)"
        )


def unique_barcodes(barcodes: pd.Series, k: int) -> tuple[list[str], DedupReport]:
    """Cleaned, de-duplicated barcodes in first-seen order, and the counts of what was dropped.

    Cleaning is the tokenizer's (upper case, gaps and whitespace removed, trailing N
    stripped; other non-ACGT letters become ``X``, which tokenises to UNK as they do), so
    barcodes that differ only in N padding, case or gaps count as duplicates, as in the
    BarcodeBERT / BIOSCAN-5M pretraining set.
    """
    present = barcodes.dropna()
    cleaned = pd.Series([encode_sequence(s).translate(_LETTERS).decode("ascii") for s in present], dtype=object)
    long_enough = cleaned[cleaned.str.len() >= 2 * k - 1]
    unique = long_enough.drop_duplicates()
    report = DedupReport(
        records=len(barcodes),
        missing=len(barcodes) - len(present),
        too_short=len(cleaned) - len(long_enough),
        duplicates=len(long_enough) - len(unique),
        unique=len(unique),
    )
    return unique.tolist(), report


class OffsetEncodings:
    """Token ids of every barcode at every start offset in ``[0, k)``.

    Offset ``o`` drops the first ``o`` nucleotides before tokenising. Each offset is
    tokenised once (cached under ``cache_dir`` when given); an epoch then draws one offset
    per barcode and gathers rows, so no tokenising happens in the training loop. Memory:
    ``k * n * tokens`` ids (2 bytes while the vocabulary fits) plus ``k * n`` lengths.
    """

    def __init__(self, barcodes: list[str], tokenizer: KmerTokenizer, cache_dir: Optional[str | Path] = None) -> None:
        self.k = tokenizer.k
        dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
        self.ids = np.empty((self.k, len(barcodes), tokenizer.length), dtype=dtype)
        # The attention mask is a prefix (CLS if any, then the k-mers before the padding).
        self.lengths = np.empty((self.k, len(barcodes)), dtype=np.int32)
        for offset in range(self.k):
            shifted = [s[offset:] for s in barcodes]
            enc = tokenizer.encode_cached(shifted, cache_dir) if cache_dir is not None else tokenizer(shifted)
            self.ids[offset] = enc.ids
            self.lengths[offset] = enc.attention_mask.sum(axis=1)

    def __len__(self) -> int:
        return self.ids.shape[1]

    def epoch_offsets(self, seed: int, epoch: int) -> np.ndarray:
        """The start offset of every barcode in ``epoch``: seeded, different across epochs."""
        return np.random.default_rng([seed, epoch]).integers(0, self.k, size=len(self))

    def take(self, rows: np.ndarray, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, attention_mask)`` int64 ``[len(rows), tokens]`` of ``rows`` at ``offsets``."""
        ids = torch.from_numpy(self.ids[offsets, rows].astype(np.int64))
        positions = torch.arange(ids.shape[1])
        mask = (positions[None, :] < torch.from_numpy(self.lengths[offsets, rows])[:, None]).long()
        return ids, mask
