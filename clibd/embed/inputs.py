"""New specimens from the command line: image files / folders, and barcodes from FASTA,
CSV, TSV or parquet files (read with ``clibd.data.sources``). Unreadable files and empty
records are returned as named skips."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from clibd.data.sources.delimited import table_columns
from clibd.data.sources.fasta import read_fasta
from clibd.data.sources.tabular import read_tabular

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


def _read_barcode_file(path: Path) -> pd.DataFrame:
    """``id`` + ``sequence`` columns, via the data sources' FASTA / CSV / TSV / parquet readers."""
    if path.suffix.lower() in FASTA_SUFFIXES:
        table = read_fasta(path)
    else:
        lower = {c.lower(): c for c in table_columns(path)}
        found = {
            ours: next((lower[c] for c in names if c in lower), None)
            for ours, names in (("processid", ID_COLUMNS), ("dna_barcode", SEQUENCE_COLUMNS))
        }
        missing = [ours for ours, theirs in found.items() if theirs is None]
        if missing:
            raise ValueError(
                f"{path}: no {' or '.join(missing)} column; ids are read from one of {list(ID_COLUMNS)}, "
                f"barcodes from one of {list(SEQUENCE_COLUMNS)}; found {list(lower.values())}"
            )
        table = read_tabular(path, found)
    ids = table["processid"].astype("string")
    ids = ids.fillna(pd.Series([f"{path.name}:{i + 1}" for i in range(len(table))], dtype="string"))
    return pd.DataFrame({"id": ids, "sequence": table["dna_barcode"].astype("string").fillna("")})


def read_barcodes(paths: Sequence[str | Path]) -> tuple[list[str], list[str], Skipped]:
    """``(ids, sequences, skipped)`` from FASTA / CSV / TSV / parquet files. A record whose
    barcode is empty (or only N, gaps and spaces) is skipped by id; an unreadable file by path."""
    frames, skipped = [], []
    for path in map(Path, paths):
        try:
            frames.append(_read_barcode_file(path))
        except (OSError, ValueError) as err:
            skipped.append((str(path), f"cannot read: {err}"))
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"id": [], "sequence": []}, dtype="string")
    informative = (records["sequence"].str.upper().str.replace(r"[N\-.\s]", "", regex=True).str.len() > 0).to_numpy(bool)
    skipped += [(str(i), "empty barcode (only N, gaps or spaces)") for i in records.loc[~informative, "id"]]
    kept = records[informative]
    return kept["id"].astype(str).tolist(), kept["sequence"].astype(str).tolist(), skipped


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
