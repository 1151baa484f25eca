"""Which strand a barcode was read on, judged by the reference library's own 8-mers.

Sequencers and public exports hand out both strands; the towers and the aligner compare a
query with references read on one. So every barcode query is oriented before it is embedded,
and a library's reference rows are oriented against each other when it is built.

Method (k-mer agreement with the references): a naive Bayes strand classifier over 8-mers.
``f[x]`` counts the ACGT 8-mer ``x`` over the library's barcodes (oriented, see below); the
weight of ``x`` is the log-odds that a read holding it is on the library's strand rather than
the other, ``w[x] = log(f[x] + 1) - log(f[rc(x)] + 1)`` (``rc``: the reverse complement; the
other strand's count of ``x`` is the library's count of ``rc(x)``). The weights are
antisymmetric (``w[rc(x)] = -w[x]``), so a read's reverse complement scores exactly minus the
read: ``score = mean of w over the read's 8-mers``; ``>= 0`` is the library's strand
(``strand`` ``+``), ``< 0`` the other (``-``: reverse-complemented before it is embedded and
aligned). A read with no ACGT 8-mer scores 0 and is kept as given. 8-mers carry both the
strand's composition (mitochondrial COI strands differ in base composition in every insect)
and exact agreement with related references, so reads of taxa absent from the library are
oriented by the first and unusual loci present in it (the shared 4k file holds five nuclear
28S reads) by the second.

Build time: the weights are fitted on the rows as given; each row is scored with its own
8-mers left out of the counts (a row of a taxon alone in the table would otherwise agree with
itself), rows scoring below 0 are reverse-complemented and counted, and the weights are
refitted on the oriented rows. This needs most rows on one strand, as every public export has.

Measured on 4,278 real BOLD insect barcodes (docs/identify.md): fitted on a random half, every row of the
other half and every reverse complement of one was oriented right (margin >= 0.73 per 8-mer).

Reverse complements (:func:`reverse_complement`) are computed on the Arrow buffer of all the
sequences at once: complementing every byte through a table and reversing the whole buffer
reverses each sequence and their order, which one more reversal of the order undoes. IUPAC
codes are complemented (R<->Y, K<->M, B<->V, D<->H; S, W, N unchanged), case is kept, gaps stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from clibd.data.dna_tokenizer import KmerTokenizer

K = 8
FORWARD, REVERSE = "+", "-"
STRAND_FILE = "strand.npy"
_CHUNK = 50_000  # sequences tokenised at a time: bounds the [chunk, length] token array

_COMPLEMENT = np.arange(256, dtype=np.uint8)
_COMPLEMENT[128:] = ord("N")  # a byte of a non-ASCII character: unknown (such a read fails quality anyway)
for _a, _b in zip("ACGTURYKMBVDHacgturykmbvdh", "TGCAAYRMKVBHDtgcaayrmkvbhd"):
    _COMPLEMENT[ord(_a)] = ord(_b)


def reverse_complement(sequences: Sequence[str] | pa.Array) -> list[str]:
    """The reverse complement of each sequence (module docstring), vectorised over all of them."""
    array = pa.array(sequences, type=pa.large_string()) if not isinstance(sequences, pa.Array) else sequences
    array = array.cast(pa.large_string()).fill_null("")
    if not len(array):
        return []
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    flipped = _COMPLEMENT[data][::-1]
    new_offsets = (offsets[-1] - offsets[::-1]).astype(np.int64)
    out = pa.LargeStringArray.from_buffers(len(array), pa.py_buffer(new_offsets), pa.py_buffer(flipped.tobytes()))
    return out.to_pylist()[::-1]


def _rc_kmer_index() -> np.ndarray:
    """For each 8-mer index (``itertools.product("ACGT")`` order, A=0 C=1 G=2 T=3, first base most
    significant), the index of its reverse complement."""
    index = np.arange(4**K)
    digits = (index[:, None] >> (2 * np.arange(K)[::-1])) & 3  # [4^K, K], first base first
    rc_digits = (3 - digits)[:, ::-1]
    return (rc_digits << (2 * np.arange(K)[::-1])).sum(axis=1)


_RC = _rc_kmer_index()


def _kmers(sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(row, kmer)``: one entry per ACGT 8-mer occurrence of each sequence (the tokenizer's cleaning;
    N k-mers left out); ``kmer`` indexes ``itertools.product("ACGT")`` order. Plain numpy: a barcode
    command orients its queries without importing scipy."""
    longest = max([K, *map(len, sequences)])
    tokenizer = KmerTokenizer(k=K, max_nucleotides=longest, stride=1)
    encoding = tokenizer(sequences)
    valid = (encoding.attention_mask == 1) & (encoding.ids >= tokenizer.kmer_offset)
    rows, _ = np.nonzero(valid)
    return rows, (encoding.ids[valid] - tokenizer.kmer_offset).astype(np.int64)


def _totals(sequences: Sequence[str]) -> np.ndarray:
    """``[4^8]`` counts of each 8-mer over ``sequences``."""
    totals = np.zeros(4**K, dtype=np.float64)
    for start in range(0, len(sequences), _CHUNK):
        totals += np.bincount(_kmers(sequences[start : start + _CHUNK])[1], minlength=4**K)
    return totals


def _weights(totals: np.ndarray) -> np.ndarray:
    return (np.log1p(totals) - np.log1p(totals[_RC])).astype(np.float32)


class StrandModel:
    """``StrandModel.fit(barcodes)`` -> ``(model, reversed)``; ``model.orient(queries)``."""

    def __init__(self, weights: np.ndarray) -> None:
        if weights.shape != (4**K,):
            raise ValueError(f"strand weights must hold one value per {K}-mer ({4**K}), got shape {weights.shape}")
        self.weights = weights.astype(np.float32)

    @classmethod
    def fit(cls, barcodes: Sequence[str]) -> tuple["StrandModel", np.ndarray]:
        """The model of ``barcodes`` once oriented, and which of them were on the other strand
        (module docstring: leave-one-out scores against the rows as given)."""
        barcodes = list(barcodes)
        totals = _totals(barcodes)
        reverse = np.zeros(len(barcodes), dtype=bool)
        for start in range(0, len(barcodes), _CHUNK):
            chunk = barcodes[start : start + _CHUNK]
            rows, kmers = _kmers(chunk)
            # Each (row, 8-mer) once with its count in the row, and the row's count of its reverse complement.
            pairs, own = np.unique(rows * 4**K + kmers, return_counts=True)
            if not len(pairs):  # no ACGT 8-mer in the chunk: every row scores 0, kept as given
                continue
            row, kmer = pairs // 4**K, pairs % 4**K
            wanted = row * 4**K + _RC[kmer]
            at = np.minimum(np.searchsorted(pairs, wanted), len(pairs) - 1)
            own_rc = np.where(pairs[at] == wanted, own[at], 0)
            # This row's count of x and of rc(x) left out: the rows as given, less this one.
            loo = np.log1p(totals[kmer] - own) - np.log1p(totals[_RC[kmer]] - own_rc)
            score = np.bincount(row, weights=own * loo, minlength=len(chunk))
            reverse[start : start + len(chunk)] = score < 0
        if reverse.any():
            as_given = _totals(np.array(barcodes, dtype=object)[reverse].tolist())
            totals += as_given[_RC] - as_given  # the flipped rows' 8-mers, now counted on the other strand
        return cls(_weights(totals)), reverse

    def scores(self, sequences: Sequence[str]) -> np.ndarray:
        """Mean 8-mer log-odds of each sequence being on the library's strand (0: no ACGT 8-mer)."""
        out = np.zeros(len(sequences), dtype=np.float64)
        for start in range(0, len(sequences), _CHUNK):
            chunk = list(sequences[start : start + _CHUNK])
            rows, kmers = _kmers(chunk)
            total = np.bincount(rows, minlength=len(chunk))
            summed = np.bincount(rows, weights=self.weights[kmers].astype(np.float64), minlength=len(chunk))
            out[start : start + len(chunk)] = summed / np.maximum(total, 1)
        return out

    def orient(self, sequences: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Each sequence on the library's strand, and ``strand`` per input (``+`` as given, ``-``
        reverse-complemented)."""
        sequences = list(sequences)
        reverse = self.scores(sequences) < 0
        oriented = np.array(sequences, dtype=object)
        if reverse.any():
            oriented[reverse] = reverse_complement(oriented[reverse].tolist())
        return oriented.tolist(), np.where(reverse, REVERSE, FORWARD)

    def save(self, directory: str | Path) -> str:
        """Write ``strand.npy``; returns its name (the library's manifest lists it)."""
        np.save(Path(directory) / STRAND_FILE, self.weights)
        return STRAND_FILE

    @classmethod
    def load(cls, directory: str | Path) -> "StrandModel | None":
        """The library's model, or None for a library built before strands were judged."""
        path = Path(directory) / STRAND_FILE
        return cls(np.load(path)) if path.is_file() else None
