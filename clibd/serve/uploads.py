"""Uploaded files -> specimens, in memory (nothing is written to disk, nothing executed or
unpickled: images go through PIL's decoders, barcodes through the FASTA / CSV readers).

Every upload either yields inputs or one :class:`InputError` naming the file (or the record)
and the problem, so one bad file never stops the rest of a batch. Ids follow ``clibd
classify``: a photo's id is its file name without the extension; a barcode's is its FASTA
id or its row's id column (``clibd.embed.inputs.ID_COLUMNS``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

from clibd.data.sources.fasta import parse_fasta
from clibd.data.transforms import ImageDecodeError, decode_image
from clibd.embed.inputs import FASTA_SUFFIXES, ID_COLUMNS, SEQUENCE_COLUMNS

TABLE_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


@dataclass(frozen=True)
class Upload:
    name: str  # the client's file name: only ever shown, never used as a path
    data: bytes


@dataclass(frozen=True)
class InputError:
    id: str  # the specimen id where known, else the file name
    file: str
    error: str


def specimen_id(name: str) -> str:
    """``photos/AB123.jpg`` -> ``AB123`` (the last component only, whatever the client sent)."""
    return PurePosixPath(name.replace("\\", "/")).stem or name


def decode_photos(uploads: list[Upload], side: int, max_bytes: int) -> tuple[pd.DataFrame, list[InputError]]:
    """``(photos, errors)``: ``photos`` (``id``, ``file``, ``record``, ``image``: RGB) decoded as ``clibd
    classify`` decodes a file (same checks; JPEGs keep a shorter side of ``side``)."""
    photos, errors = [], []
    for upload in uploads:
        sid = specimen_id(upload.name)
        if len(upload.data) > max_bytes:
            errors.append(InputError(sid, upload.name, _too_large(upload, max_bytes)))
            continue
        try:
            photos.append((sid, upload.name, 1, decode_image(upload.data, upload.name, side)))
        except (OSError, ImageDecodeError) as err:
            errors.append(InputError(sid, upload.name, str(err)))
    return pd.DataFrame(photos, columns=["id", "file", "record", "image"]).astype({"record": int}), errors


def read_barcode_uploads(uploads: list[Upload], max_bytes: int) -> tuple[pd.DataFrame, list[InputError]]:
    """``(records, errors)``: ``records`` (``id``, ``file``, ``record``: 1-based in its file, ``sequence``)
    from FASTA (or pasted FASTA text), CSV or TSV uploads; barcodes are checked later, as ``clibd classify``
    checks them (an empty one gets its row, with the reason in ``quality``)."""
    tables, errors = [], []
    for upload in uploads:
        if len(upload.data) > max_bytes:
            errors.append(InputError(upload.name, upload.name, _too_large(upload, max_bytes)))
            continue
        try:
            tables.append(_barcode_table(upload))
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
            errors.append(InputError(upload.name, upload.name, f"cannot read: {err}"))
    records = (
        pd.concat(tables, ignore_index=True)
        if tables
        else pd.DataFrame({"id": [], "file": [], "record": [], "sequence": []}).astype({"record": int})
    )
    if records.empty and not errors and uploads:
        errors.append(InputError(uploads[0].name, uploads[0].name, "no barcode records"))
    return records, errors


def _barcode_table(upload: Upload) -> pd.DataFrame:
    """``id``, ``file``, ``record``, ``sequence`` (a missing id becomes ``<file>:<record number>``)."""
    suffix = PurePosixPath(upload.name).suffix.lower()
    if suffix in TABLE_SEPARATORS:
        raw = pd.read_csv(io.BytesIO(upload.data), sep=TABLE_SEPARATORS[suffix], dtype="string")
        lower = {c.lower(): c for c in raw.columns}
        id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None)
        seq_col = next((lower[c] for c in SEQUENCE_COLUMNS if c in lower), None)
        if id_col is None or seq_col is None:
            raise ValueError(
                f"{upload.name}: ids are read from one of {list(ID_COLUMNS)}, barcodes from one of "
                f"{list(SEQUENCE_COLUMNS)}; found columns {list(raw.columns)}"
            )
        ids, sequences = raw[id_col], raw[seq_col]
    elif suffix in FASTA_SUFFIXES or not suffix or upload.data.lstrip()[:1] == b">":
        table = parse_fasta(upload.data, upload.name)
        ids, sequences = table["processid"], table["dna_barcode"]
    else:
        raise ValueError(f"{upload.name}: not a barcode file (FASTA {sorted(FASTA_SUFFIXES)}, .csv or .tsv)")
    fallback = pd.Series([f"{upload.name}:{i + 1}" for i in range(len(ids))], dtype="string", index=ids.index)
    return pd.DataFrame(
        {
            "id": ids.astype("string").fillna(fallback).reset_index(drop=True),
            "file": upload.name,
            "record": range(1, len(ids) + 1),
            "sequence": sequences.astype("string").fillna("").reset_index(drop=True),
        }
    )


def _too_large(upload: Upload, max_bytes: int) -> str:
    return f"{upload.name}: {len(upload.data):,} bytes exceeds the per-file limit of {max_bytes:,} bytes"
