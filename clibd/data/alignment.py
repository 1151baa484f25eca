"""Percent identity of barcodes from a pairwise alignment, the figure a barcoder reads.

BOLD's identification engine and BLAST report the identity of an alignment, not a k-mer or
embedding similarity. Here each query is aligned to each reference with parasail's
semi-global alignment (``sg``: gaps at either end of either sequence are free), so two reads
of the same region that were trimmed differently are not penalised for their ends, whichever
one starts or stops first.

- Scoring (blastn's defaults): match +2, mismatch -3, gap open 5, gap extend 2. ``N`` scores
  +1 against any base: an unread base is no evidence of a difference.
- ``identity`` = the aligned columns that agree (``N`` agrees with anything) over the aligned
  columns between the first and the last base the two reads share (inner gaps count, end
  gaps do not), in percent. ``overlap`` is that column count. Below ``min_overlap`` columns
  (BOLD's engine asks for 100) the identity is NaN: a chance overlap of a few bases at the
  ends can be 100 % identical.
- Cleaning first (:func:`clean_barcode`): upper case, ``U`` -> ``T``, alignment gaps and
  whitespace removed, every other character (IUPAC codes, junk) -> ``N``, ``N`` runs at either
  end removed (BOLD pads barcodes with N).

Only parasail's plain (non-profile) functions are used: its query-profile functions crash the
interpreter in parasail-python 1.3.4 (a segmentation fault, seen here). One call aligns one
pair in C (~0.4 ms for two 650-nt barcodes); the Python loop over pairs costs about 1 % of that.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import parasail

MATCH, MISMATCH, UNREAD = 2, -3, 1
GAP_OPEN, GAP_EXTEND = 5, 2
MIN_OVERLAP = 100
_ALPHABET = "ACGTN"
_MATRIX = parasail.matrix_create(_ALPHABET, MATCH, MISMATCH)
for _i in range(len(_ALPHABET)):  # N against anything, both ways
    _MATRIX.set_value(_ALPHABET.index("N"), _i, UNREAD)
    _MATRIX.set_value(_i, _ALPHABET.index("N"), UNREAD)

# One str.translate pass: A/C/G/T/N kept (U -> T, lower case up), gaps and whitespace dropped,
# anything else -> N (characters beyond this table are mapped by clean_barcode).
_KEEP = {ord(c): c for c in "ACGTN"} | {ord(c.lower()): c for c in "ACGTN"} | {ord("U"): "T", ord("u"): "T"}
_DROP = {ord(c): None for c in "-. \t\r\n\v\f"}
_TABLE = {i: "N" for i in range(128)} | _KEEP | _DROP


class Identity(NamedTuple):
    identity: np.ndarray  # float64 [n], percent in [0, 100]; NaN where the overlap is below min_overlap
    overlap: np.ndarray  # int64 [n], aligned columns between the first and last shared base


def clean_barcode(sequence: str) -> str:
    """The barcode as it is aligned: ``ACGTN`` only, no gaps, no ``N`` runs at the ends."""
    cleaned = sequence.translate(_TABLE)
    if not cleaned.isascii():
        cleaned = "".join(c if c.isascii() else "N" for c in cleaned)
    return cleaned.strip("N")


def percent_identity(query: str, references: Sequence[str], min_overlap: int = MIN_OVERLAP) -> Identity:
    """Identity of ``query`` against each of ``references`` (raw barcodes; cleaned here)."""
    q = clean_barcode(query)
    identity = np.full(len(references), np.nan)
    overlap = np.zeros(len(references), dtype=np.int64)
    if not q:
        return Identity(identity, overlap)
    for i, reference in enumerate(references):
        r = clean_barcode(reference)
        if not r:
            continue
        result = parasail.sg_stats_striped_16(q, r, GAP_OPEN, GAP_EXTEND, _MATRIX)
        overlap[i] = result.length
        if result.length >= max(min_overlap, 1):
            identity[i] = 100.0 * result.similar / result.length
    return Identity(identity, overlap)
