"""New specimens from the command line: image files / folders, and barcodes from FASTA,
CSV or TSV files. Unreadable or empty records are returned as named skips."""

from __future__ import annotations

from pathlib import Path
import sys
import warnings
from typing import Optional, Sequence

import numpy as np
import pandas as pd

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
FASTA_SUFFIXES = {".fa", ".fasta", ".fas", ".fna"}
# Accepted column names, first match wins (BIOSCAN / BOLD / BarcodeBERT / generic spellings).
ID_COLUMNS = ("processid", "id", "sampleid", "name")
SEQUENCE_COLUMNS = ("dna_barcode", "nucleotides", "nuc", "sequence", "seq")

Skipped = list[tuple[str, str]]  # (input name, reason)


def expand_image_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given (whatever their suffix, so a bad one is reported, not ignored);
    folders expanded to their image files (by suffix, recursively, sorted)."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(path)
    return out


def _read_fasta(path: Path) -> pd.DataFrame:
    ids, seqs = [], []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(">"):
            ids.append(line[1:].split(maxsplit=1)[0] if line[1:].strip() else f"{path.name}:{len(ids) + 1}")
            seqs.append([])
        elif line.strip():
            if not seqs:
                raise ValueError(f"{path}: sequence data before the first '>' header")
            seqs[-1].append(line.strip())
    return pd.DataFrame({"id": ids, "sequence": ["".join(s) for s in seqs]})


def _read_table(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    lower = {c.lower(): c for c in table.columns}
    seq_col = next((lower[c] for c in SEQUENCE_COLUMNS if c in lower), None)
    if seq_col is None:
        raise ValueError(f"{path}: no barcode column; expected one of {list(SEQUENCE_COLUMNS)}, found {list(table.columns)}")
    id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None)
    ids = table[id_col] if id_col else pd.Series([f"{path.name}:{i + 2}" for i in range(len(table))])
    return pd.DataFrame({"id": ids.to_numpy(), "sequence": table[seq_col].to_numpy()})


def read_barcodes(paths: Sequence[str | Path]) -> tuple[list[str], list[str], Skipped]:
    """``(ids, sequences, skipped)`` from FASTA / CSV / TSV files. A record whose barcode is
    empty (or only N, gaps and spaces) is skipped by id; an unreadable file by path."""
    frames, skipped = [], []
    for path in map(Path, paths):
        try:
            frames.append(_read_fasta(path) if path.suffix.lower() in FASTA_SUFFIXES else _read_table(path))
        except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
            skipped.append((str(path), f"cannot read: {err}"))
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"id": [], "sequence": []})
    informative = records["sequence"].str.upper().str.replace(r"[N\-.\s]", "", regex=True).str.len() > 0
    skipped += [(str(i), "empty barcode (only N, gaps or spaces)") for i in records.loc[~informative, "id"]]
    kept = records[informative]
    return kept["id"].astype(str).tolist(), kept["sequence"].tolist(), skipped


def embed_specimens(
    embedder, images: Optional[Sequence[str]] = None, dna: Optional[Sequence[str]] = None
) -> tuple[np.ndarray, list[str], str, Skipped]:
    """Embed the images (files / folders) or the barcodes (files) of new specimens:
    ``(embeddings, ids, modality, skipped)``; skips are also printed to stderr by name."""
    if (images is None) == (dna is None):
        raise ValueError("give either images or DNA barcode files, not both")
    if images is not None:
        with warnings.catch_warnings():  # reported below, one line per input
            warnings.filterwarnings("ignore", message="skipped .* images")
            emb, ids, skipped = embedder.embed_images(expand_image_paths(images))
        modality = "image"
    else:
        ids, sequences, skipped = read_barcodes(dna)
        emb, ids = embedder.embed_dna(sequences, ids)
        modality = "dna"
    for name, reason in skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    return emb, ids, modality, skipped
