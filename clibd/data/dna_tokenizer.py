"""Vectorised k-mer tokenisation of DNA barcodes, compatible with BarcodeBERT checkpoints.

Cleaning (``cleaning="clibd"``, the default; documented behaviour, applied identically by the test oracle):
  1. non-ASCII characters become ``?`` (one each), ASCII letters are upper-cased; alignment gaps
     (``-``, ``.``) and ASCII whitespace are removed; any other non-ACGT character (N, IUPAC
     codes, digits, non-ASCII) stays and makes every k-mer that covers it ``UNK``;
  2. trailing ``N`` runs are stripped (BOLD pads barcodes with N; they carry no signal);
  3. the sequence is truncated / right-padded with ``N`` to ``max_nucleotides``.
``cleaning="original"`` (``data.dna_cleaning: original``) does step 3 only, as the published
CLIBD code does (``bioscanclip/util/util.py`` ``PadSequence`` and ``KmerTokenizer``, lines 77-98,
then torchtext's vocabulary with ``<UNK>`` as default, ``bioscanclip/model/dna_encoder.py`` line 61):
a lower-case k-mer, or one holding a gap, whitespace or any non-ACGT character, is ``UNK``; trailing
Ns stay and count towards ``max_nucleotides``.
Tokens are the k-mers starting every ``stride`` nucleotides (stride = k: non-overlapping).
A k-mer lying wholly in the padding gets ``attention_mask`` 0, so pooling never counts it;
its id is ``UNK``, what the checkpoints saw for N padding.

Two options for barcodes of a protein-coding gene (COI), both off by default (docs/dna_recipe.md):
- ``patterns``: the k-mers read at each start, each a string of ``0``/``1`` with k ``1``s: a token
  reads the bases under the ``1``s of a window of ``len(pattern)`` bases. ``"11011011011"`` skips
  each codon's third base when it starts at a codon's first (most substitutions between related
  species fall there: synonymous changes). Each pattern has its own block of 4^k k-mers in the
  vocabulary, in the order given, and its own block of tokens: all of the first pattern's, then
  the second's. Default: one contiguous k-mer, ``"1" * k``.
- ``reading_frame``: each barcode first loses the bases before its first whole codon, in the frame
  with the fewest stop codons (TAA, TAG: stops in the standard and both mitochondrial codes; ties:
  the earliest frame), so with ``stride: 3`` every token starts at a codon's first base.

Vocabulary layouts (docs/datasets.md): ``barcodebert`` = ``[MASK]``, ``[UNK]``, then
all 4^k ACGT k-mers in ``itertools.product("ACGT", repeat=k)`` order; ``barcodebert_v1``
(the checkpoint CLIBD used) = ``<MASK>``, ``<CLS>``, ``<UNK>``, then k-mers, and every
sequence gets a prefix token: ``<CLS>`` (id 1) by default, or ``prefix_id`` (the original CLIBD
code prefixed id 0, ``<MASK>``: ``model.dna.prefix_token_id: 0``).
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence, get_args

import numpy as np

from clibd.config import DnaCleaning

VOCAB_LAYOUTS: dict[str, tuple[str, ...]] = {
    "barcodebert": ("[MASK]", "[UNK]"),
    "barcodebert_v1": ("<MASK>", "<CLS>", "<UNK>"),
}

# Bytes removed by cleaning: alignment gaps and ASCII whitespace.
_DELETE = b"-. \t\r\n\v\f"
# One bytes.translate pass maps every byte to its code: A/C/G/T (either case) -> 0-3,
# N/n -> 5, anything else -> 4. Codes above 3 make a k-mer UNK.
_N_CODE = 5
_CODE_TABLE = bytearray([4] * 256)
for _i, _b in enumerate(b"ACGT"):
    _CODE_TABLE[_b] = _CODE_TABLE[_b + 32] = _i
_CODE_TABLE[ord("N")] = _CODE_TABLE[ord("n")] = _N_CODE
_CODE_TABLE = bytes(_CODE_TABLE)
_N_BYTE = bytes([_N_CODE])
# cleaning="original": upper-case A/C/G/T only; everything else (lower case, gaps, N) makes a k-mer UNK.
_ORIGINAL_TABLE = bytes(i if (i := b"ACGT".find(byte)) >= 0 else 4 for byte in range(256))
_A, _G, _T = 0, 2, 3  # nucleotide codes of the stop codons' bases
CODON = 3


class KmerEncoding(NamedTuple):
    ids: np.ndarray  # int32 [n, tokens]
    attention_mask: np.ndarray  # int8 [n, tokens], 0 on padding


def encode_sequence(seq: str) -> bytes:
    """Cleaning steps 1-2 for one sequence, as nucleotide codes (one C-level pass)."""
    return seq.encode("ascii", "replace").translate(_CODE_TABLE, _DELETE).rstrip(_N_BYTE)


def encode_sequence_original(seq: str) -> bytes:
    """The published code's (no) cleaning, as nucleotide codes: one code per character."""
    return seq.encode("ascii", "replace").translate(_ORIGINAL_TABLE)


ENCODERS = {"clibd": encode_sequence, "original": encode_sequence_original}


class KmerTokenizer:
    """``KmerTokenizer(k=4, vocab="barcodebert")(["ACGT...", ...]) -> (ids, mask)``."""

    def __init__(
        self,
        k: int = 4,
        vocab: str = "barcodebert",
        max_nucleotides: int = 660,
        stride: int | None = None,
        prefix_id: int | None = None,
        cleaning: DnaCleaning = "clibd",
        patterns: Sequence[str] | None = None,
        reading_frame: bool = False,
    ) -> None:
        if vocab not in VOCAB_LAYOUTS:
            raise ValueError(f"unknown DNA vocabulary layout {vocab!r}; choose one of {sorted(VOCAB_LAYOUTS)}")
        patterns = list(patterns or ["1" * max(k, 0)])
        span = max(map(len, patterns))
        if k < 1 or max_nucleotides < span:
            raise ValueError(
                f"need 1 <= k <= max_nucleotides, got k={k} (window {span}), max_nucleotides={max_nucleotides}"
            )
        for pattern in patterns:
            if set(pattern) - {"0", "1"} or pattern[0] != "1" or pattern[-1] != "1" or pattern.count("1") != k:
                raise ValueError(f"k-mer pattern {pattern!r}: needs k={k} '1's, '0's between them, a '1' at both ends")
        self.k = k
        self.patterns = patterns
        self.span = span  # bases the longest pattern's window covers
        self.reading_frame = reading_frame
        self.stride = stride or k
        self.layout = vocab
        self.max_nucleotides = max_nucleotides
        self.special_tokens = VOCAB_LAYOUTS[vocab]
        self.unk_id = len(self.special_tokens) - 1  # UNK is the last special token in both layouts
        self.mask_id = 0
        # Id of the token prefixed to every sequence (None: no prefix). Only the v1 layout has one.
        self.cls_id = self.special_tokens.index("<CLS>") if "<CLS>" in self.special_tokens else None
        if prefix_id is not None:
            if self.cls_id is None:
                raise ValueError(f"prefix_id={prefix_id}: vocabulary {vocab!r} has no prefix token (use v1)")
            last = len(self.special_tokens) - 1
            if not 0 <= prefix_id <= last:
                raise ValueError(f"prefix_id={prefix_id}: must be a special token id (0-{last})")
            self.cls_id = prefix_id
        self.kmer_offset = len(self.special_tokens)
        self.vocab_size = self.kmer_offset + len(patterns) * 4**k
        self.starts = (max_nucleotides - span) // self.stride + 1  # token starts per pattern
        self.n_kmers = len(patterns) * self.starts
        self.length = self.n_kmers + (self.cls_id is not None)
        self.cleaning = cleaning

    @property
    def cleaning(self) -> DnaCleaning:
        """``clibd`` | ``original``: the cleaning rules above (``data.dna_cleaning``)."""
        return self._cleaning

    @cleaning.setter
    def cleaning(self, value: DnaCleaning) -> None:
        if value not in ENCODERS:
            raise ValueError(f"DNA cleaning {value!r}: choose one of {get_args(DnaCleaning)}")
        self._cleaning = value

    @property
    def vocab(self) -> list[str]:
        """Token strings in id order (the layout a checkpoint's vocab file uses); with several patterns
        a k-mer's string ends in ``/`` and its pattern."""
        kmers = ["".join(p) for p in itertools.product("ACGT", repeat=self.k)]
        if self.patterns != ["1" * self.k]:
            kmers = [f"{kmer}/{pattern}" for pattern in self.patterns for kmer in kmers]
        return list(self.special_tokens) + kmers

    def settings(self) -> dict:
        """The constructor's arguments; ``patterns`` and ``reading_frame`` only when they are not the default."""
        settings = {
            "k": self.k,
            "stride": self.stride,
            "vocab": self.layout,
            "max_nucleotides": self.max_nucleotides,
            "prefix_id": self.cls_id,
            "cleaning": self.cleaning,
        }
        if self.patterns != ["1" * self.k]:
            settings["patterns"] = list(self.patterns)
        if self.reading_frame:
            settings["reading_frame"] = True
        return settings

    def __call__(self, sequences: Sequence[str], chunk_size: int = 32768) -> KmerEncoding:
        n = len(sequences)
        ids = np.empty((n, self.length), dtype=np.int32)
        mask = np.empty((n, self.length), dtype=np.int8)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            ids[start:stop], mask[start:stop] = self._encode_chunk(sequences[start:stop])
        return KmerEncoding(ids, mask)

    def _encode_chunk(self, sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        L, k, s = self.max_nucleotides, self.k, self.stride
        encode = ENCODERS[self.cleaning]
        cleaned = [encode(seq)[:L] for seq in sequences]
        lengths = np.fromiter(map(len, cleaned), dtype=np.int64, count=len(cleaned))
        raw = b"".join(c.ljust(L, _N_BYTE) for c in cleaned)
        codes = np.frombuffer(raw, dtype=np.uint8).reshape(len(cleaned), L)
        if self.reading_frame:
            codes, lengths = _from_first_codon(codes, lengths)
        # Build each k-mer's base-4 number one nucleotide column at a time: k vector
        # operations over [n, starts] arrays per pattern instead of a per-k-mer loop.
        blocks, invalid = [], []
        for block, pattern in enumerate(self.patterns):
            values = np.zeros((len(cleaned), self.starts), dtype=np.int32)
            bad = np.zeros((len(cleaned), self.starts), dtype=bool)
            for j in (i for i, c in enumerate(pattern) if c == "1"):
                column = codes[:, j : j + s * self.starts : s]
                values = (values << 2) | (column & 3)
                bad |= column > 3
            blocks.append(values + self.kmer_offset + block * 4**k)
            invalid.append(bad)
        ids = np.concatenate(blocks, axis=1)
        ids[np.concatenate(invalid, axis=1)] = self.unk_id
        starts = np.tile(np.arange(self.starts) * s, len(self.patterns))
        mask = starts[None, :] < lengths[:, None]
        if self.cls_id is not None:
            ids = np.concatenate([np.full((len(cleaned), 1), self.cls_id), ids], axis=1)
            mask = np.concatenate([np.ones((len(cleaned), 1), dtype=bool), mask], axis=1)
        return ids, mask

    def encode_cached(self, sequences: Sequence[str], cache_dir: str | Path, chunk_size: int = 32768) -> KmerEncoding:
        """Tokenise once per (content, settings); later calls load the ``.npz``."""
        digest = hashlib.sha256(repr(sorted(self.settings().items())).encode())
        # The digest of "\0".join(sequences), fed a chunk at a time: millions of barcodes are never one string.
        for start in range(0, len(sequences), chunk_size):
            joined = "\0".join(sequences[start : start + chunk_size])
            digest.update((("\0" if start else "") + joined).encode("utf-8", "replace"))
        path = Path(cache_dir) / f"dna-{digest.hexdigest()[:24]}.npz"
        if path.is_file():
            try:
                with np.load(path) as cached:
                    return KmerEncoding(cached["ids"], cached["attention_mask"])
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                warnings.warn(f"DNA token cache {path} is unreadable ({err}); rebuilding it", stacklevel=2)
        encoding = self(sequences, chunk_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:8]}.npz")  # ranks may write the same entry at once
        np.savez(tmp, ids=encoding.ids, attention_mask=encoding.attention_mask)
        tmp.replace(path)
        return encoding


def reading_frame(codes: np.ndarray) -> np.ndarray:
    """``[n]`` offset (0-2) of the first whole codon of each row of nucleotide codes ``[n, L]``: the
    frame with the fewest stop codons (TAA, TAG); the earliest of equal frames."""
    first, second, third = codes[:, :-2], codes[:, 1:-1], codes[:, 2:]
    stop = (first == _T) & (second == _A) & ((third == _A) | (third == _G))
    frame_of_start = np.arange(stop.shape[1]) % CODON
    stops = np.stack([stop[:, frame_of_start == f].sum(axis=1) for f in range(CODON)], axis=1)
    return stops.argmin(axis=1)


def _from_first_codon(codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row shifted left to its first whole codon (``reading_frame``), N-padded; lengths shortened alike."""
    frame = reading_frame(codes)
    columns = np.arange(codes.shape[1])[None, :] + frame[:, None]
    shifted = np.take_along_axis(codes, np.minimum(columns, codes.shape[1] - 1), axis=1)
    shifted[columns >= codes.shape[1]] = _N_CODE
    return shifted, np.maximum(lengths - frame, 0)
