"""New specimens from the command line: image files / folders, and barcodes from FASTA,
CSV, TSV or parquet files (read with ``clibd.data.sources``), quality-checked
(``clibd.data.quality``) and embedded; or the same already in memory (:func:`embed_decoded`).

Every input record becomes one row of ``records``: ``id``, ``file``, ``record`` (1-based
record number in its file; 1 for a photo) and ``quality`` (``""`` = passed); barcodes also keep
``sequence`` and ``strand``: given an ``orient`` function (a library's
``clibd.index.strand.StrandModel.orient``), each barcode that passed is put on the library's strand
before it is embedded (``strand`` ``+`` as given, ``-`` reverse-complemented; ``<NA>`` otherwise). Unreadable
files are returned as named skips. Duplicate ids within one modality's inputs are an
error naming them and their records: the id is how a photo meets its barcode and how an
output row is traced back, so it must say which specimen it is.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from clibd.config import QualityConfig
from clibd.data.quality import barcode_quality
from clibd.data.sources.delimited import table_columns
from clibd.data.sources.fasta import FASTA_SUFFIXES, read_fasta
from clibd.data.sources.tabular import read_tabular
from clibd.embed.embedder import Embedder, image_id

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
# Accepted column names, first match wins (BIOSCAN / BOLD / BarcodeBERT / generic spellings).
ID_COLUMNS = ("processid", "id", "sampleid", "name")
SEQUENCE_COLUMNS = ("dna_barcode", "nucleotides", "nuc", "sequence", "seq")
RECORD_COLUMNS = ["id", "file", "record", "quality"]
BARCODE_COLUMNS = [*RECORD_COLUMNS, "sequence", "strand"]

Skipped = list[tuple[str, str]]  # (input name, reason)
Orient = Callable[[list[str]], tuple[list[str], np.ndarray]]  # reads -> (on the library's strand, "+"/"-" each)


@dataclass
class EmbeddedInputs:
    """One modality's inputs: ``records`` (one row per input record, input order, columns
    ``RECORD_COLUMNS``) and ``embeddings`` ``[len(records), D]`` (NaN rows: not embedded,
    a barcode that failed its quality check)."""

    modality: str
    records: pd.DataFrame
    embeddings: np.ndarray
    skipped: Skipped


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
    """``id``, ``file``, ``record``, ``sequence`` via the data sources' FASTA / CSV / TSV / parquet readers."""
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
    record = np.arange(1, len(table) + 1)
    ids = table["processid"].astype("string").reset_index(drop=True)
    ids = ids.fillna(pd.Series([f"{path.name}:{i}" for i in record], dtype="string"))
    sequences = table["dna_barcode"].astype("string").fillna("").reset_index(drop=True)
    return pd.DataFrame({"id": ids, "file": str(path), "record": record, "sequence": sequences})


def read_barcodes(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, Skipped]:
    """``(records, skipped)``: every record of the readable FASTA / CSV / TSV / parquet files
    (columns ``id``, ``file``, ``record``, ``sequence``), and the unreadable files by path."""
    frames, skipped = [], []
    for path in map(Path, paths):
        try:
            frames.append(_read_barcode_file(path))
        except (OSError, ValueError) as err:
            skipped.append((str(path), f"cannot read: {err}"))
    empty = pd.DataFrame({"id": [], "file": [], "record": [], "sequence": []}).astype({"record": int})
    return (pd.concat(frames, ignore_index=True) if frames else empty), skipped


def check_unique_ids(records: pd.DataFrame, what: str) -> None:
    """Duplicate ids are an error naming each (up to 10) with its ``file:record`` places."""
    duplicated = records[records["id"].duplicated(keep=False)]
    places: dict[str, list[str]] = {}
    for key, file, record in zip(duplicated["id"], duplicated["file"], duplicated["record"]):
        places.setdefault(key, []).append(f"{file}:{record}")
    if places:
        listed = "; ".join(f"{key!r} ({', '.join(where)})" for key, where in list(places.items())[:10])
        raise ValueError(
            f"{len(places)} duplicate {what} ids, each must name one specimen: {listed}"
            + (" ..." if len(places) > 10 else "")
        )


def embed_barcode_records(
    embedder: Embedder,
    records: pd.DataFrame,
    rules: QualityConfig,
    skipped: Optional[Skipped] = None,
    orient: Optional[Orient] = None,
) -> EmbeddedInputs:
    """Check (``clibd.data.quality.barcode_quality``), orient (``orient``, module docstring) and embed
    the barcodes that pass; ``records``: ``id``, ``file``, ``record``, ``sequence`` (from files or from
    memory), ``skipped``: unreadable inputs."""
    check_unique_ids(records, "barcode")
    records = records.assign(quality=barcode_quality(records["sequence"].tolist(), rules), strand=pd.NA)
    records = records.astype({"sequence": "string", "strand": "string"})
    passed = (records["quality"] == "").to_numpy(bool)
    embeddings = np.full((len(records), embedder.dim), np.nan, dtype=np.float32)
    if passed.any():
        if orient is not None:
            oriented, strand = orient(records.loc[passed, "sequence"].tolist())
            records.loc[passed, "sequence"], records.loc[passed, "strand"] = oriented, strand
        embeddings[passed], _ = embedder.embed_dna(records.loc[passed, "sequence"].tolist())
    return EmbeddedInputs("dna", records[BARCODE_COLUMNS].reset_index(drop=True), embeddings, skipped or [])


def embed_barcodes(
    embedder: Embedder, paths: Sequence[str | Path], rules: QualityConfig, orient: Optional[Orient] = None
) -> EmbeddedInputs:
    """Read, check, orient and embed the barcodes of FASTA / CSV / TSV / parquet files."""
    records, skipped = read_barcodes(paths)
    return embed_barcode_records(embedder, records, rules, skipped, orient)


def embed_photo_items(
    embedder: Embedder, items: Sequence[str | Path | Image.Image], records: pd.DataFrame, rules: QualityConfig
) -> EmbeddedInputs:
    """Decode (files), check (``clibd.data.quality.photo_quality``) and embed photos given as files
    or as decoded images; ``records`` (``id``, ``file``, ``record``) describe ``items`` one for one."""
    check_unique_ids(records, "photo (file name without extension)")
    with warnings.catch_warnings():  # reported by the caller, one line per input
        warnings.filterwarnings("ignore", message="skipped .* images")
        result = embedder.embed_images(items, rules)
    names = pd.Index([image_id(item, i) for i, item in enumerate(items)])  # the embedder's ids: rows back
    read = records.iloc[names.get_indexer(result.ids)].reset_index(drop=True)
    read["quality"] = result.quality
    return EmbeddedInputs("image", read[RECORD_COLUMNS], result.embeddings, result.skipped)


def embed_photos(embedder: Embedder, paths: Sequence[str | Path], rules: QualityConfig) -> EmbeddedInputs:
    """Photo files and folders; unreadable files are skips."""
    files = expand_image_paths(paths)
    stems = pd.DataFrame(
        {"id": [image_id(p, i) for i, p in enumerate(files)], "file": list(map(str, files)), "record": 1}
    )
    return embed_photo_items(embedder, files, stems, rules)


def embed_decoded(
    embedder: Embedder,
    photos: Optional[pd.DataFrame] = None,
    barcodes: Optional[pd.DataFrame] = None,
    rules: Optional[QualityConfig] = None,
    orient: Optional[Orient] = None,
) -> dict[str, EmbeddedInputs]:
    """:func:`embed_inputs` for inputs already in memory (a server's uploads: nothing touches disk).
    ``photos``: ``id``, ``file``, ``record``, ``image`` (PIL); ``barcodes``: ``id``, ``file``, ``record``,
    ``sequence``; None: that modality was not given."""
    if photos is None and barcodes is None:
        raise ValueError("give photos, DNA barcodes, or both")
    rules = QualityConfig() if rules is None else rules
    out = {}
    if photos is not None:
        out["image"] = embed_photo_items(embedder, photos["image"].tolist(), photos.drop(columns="image"), rules)
    if barcodes is not None:
        out["dna"] = embed_barcode_records(embedder, barcodes, rules, orient=orient)
    return out


def embed_inputs(
    embedder: Embedder,
    images: Optional[Sequence[str]] = None,
    dna: Optional[Sequence[str]] = None,
    rules: Optional[QualityConfig] = None,
    orient: Optional[Orient] = None,
) -> dict[str, EmbeddedInputs]:
    """``{"image": ..., "dna": ...}`` for the modalities given; skips are also printed to stderr by name."""
    if images is None and dna is None:
        raise ValueError("give image files / folders, DNA barcode files, or both")
    rules = QualityConfig() if rules is None else rules
    out = {}
    if images is not None:
        out["image"] = embed_photos(embedder, images, rules)
    if dna is not None:
        out["dna"] = embed_barcodes(embedder, dna, rules, orient)
    for inputs in out.values():
        for name, reason in inputs.skipped:
            print(f"skipped {name}: {reason}", file=sys.stderr)
    return out
