"""Uploaded files -> specimens, in memory (nothing is written to disk, nothing executed or
unpickled: images go through PIL's decoders, barcodes through the FASTA / CSV readers).

Every upload gives rows as ``clibd classify``'s files do: a bad file or record gets its row
with the problem in words, so one bad file never stops the rest of a batch, and the CSV has a
row for every input. Ids follow ``clibd classify``: a photo's id is its file name without the
extension; a barcode's is its FASTA id or its row's id column (``clibd.embed.records.ID_COLUMNS``);
pasted bare sequences are ``pasted-1``, ``pasted-2``, ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

from clibd.data.transforms import ImageDecodeError, decode_image
from clibd.embed.records import barcode_file_records, unreadable_row

PASTED_NAME = "pasted.fasta"  # what the page's text box is called in rows and errors
BARCODE_LINE = 200  # a pasted line this long is a whole barcode, not a wrapped piece of one


@dataclass(frozen=True)
class Upload:
    name: str  # the client's file name: only ever shown, never used as a path
    data: bytes


def specimen_id(name: str) -> str:
    """``photos/AB123.jpg`` -> ``AB123`` (the last component only, whatever the client sent)."""
    return PurePosixPath(name.replace("\\", "/")).stem or name


def decode_photos(uploads: list[Upload], side: int, max_bytes: int) -> pd.DataFrame:
    """``id``, ``file``, ``record``, ``image`` (RGB; None where it could not be decoded) and ``problem``
    (why, in words; ``<NA>`` where it was): decoded as ``clibd classify`` decodes a file (same checks;
    JPEGs keep a shorter side of ``side``)."""
    rows = []
    for upload in uploads:
        image, problem = None, None
        if len(upload.data) > max_bytes:
            problem = _too_large(upload, max_bytes)
        else:
            try:
                image = decode_image(upload.data, upload.name, side)
            except ImageDecodeError as err:
                problem = err.problem
        rows.append((specimen_id(upload.name), upload.name, 1, image, problem))
    table = pd.DataFrame(rows, columns=["id", "file", "record", "image", "problem"])
    return table.astype({"id": "string", "record": "Int64", "problem": "string"})


def read_barcode_uploads(uploads: list[Upload], max_bytes: int) -> pd.DataFrame:
    """Every record of FASTA / CSV / TSV / parquet uploads and pasted text (``clibd.embed.records.
    BARCODE_COLUMNS``; read as ``clibd classify`` reads files: a bad record or file gets its row with
    the problem); barcodes are checked later, as ``clibd classify`` checks them."""
    tables = []
    for upload in uploads:
        if len(upload.data) > max_bytes:
            tables.append(unreadable_row(upload.name, _too_large(upload, max_bytes)))
        elif upload.name == PASTED_NAME and not upload.data.lstrip().startswith(b">"):
            tables.append(bare_sequences(upload))
        else:
            tables += list(barcode_file_records(upload.name, upload.data))
    if not tables:
        return unreadable_row("", "").iloc[:0]
    return pd.concat(tables, ignore_index=True)


def bare_sequences(upload: Upload) -> pd.DataFrame:
    """Pasted sequences without FASTA headers (BOLD's identification engine takes them too), named
    ``pasted-1``, ``pasted-2``, ...: blocks of lines separated by blank lines; in a block whose lines
    are all as long as a barcode (200 characters or more) each line is one, else the block is one
    sequence wrapped at a width."""
    text = upload.data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    sequences = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        if lines and min(map(len, lines)) >= BARCODE_LINE:
            sequences += lines
        elif lines:
            sequences.append("".join(lines))
    n = len(sequences)
    return pd.DataFrame(
        {
            "id": pd.array([f"pasted-{i}" for i in range(1, n + 1)], "string"),
            "file": upload.name,
            "record": pd.array(range(1, n + 1), "Int64"),
            "sequence": pd.array(sequences, "string"),
            "problem": pd.array([None] * n, "string"),
        }
    )


def _too_large(upload: Upload, max_bytes: int) -> str:
    return f"{len(upload.data):,} bytes exceeds the per-file limit of {max_bytes:,} bytes"
