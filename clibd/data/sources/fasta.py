"""Barcodes from FASTA, and FASTA written from a specimen table.

Accepted headers (after ``>``):

- ``id`` or ``id description``: the id is the first word; the description is dropped;
- ``id|split|order|family|genus|species``: fields separated by ``|`` (they may hold spaces,
  e.g. a species name; trailing fields may be left out; an empty field is unknown).

Sequence lines are joined with all whitespace removed; CRLF and a UTF-8 BOM are accepted.
Text before the first header, or a header with more than 6 fields, is an error naming the line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clibd.data.specimens import normalise_table

HEADER_FIELDS = ("processid", "split", "order", "family", "genus", "species")
FASTA_SUFFIXES = {".fa", ".fasta", ".fas", ".fna"}


def read_fasta(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FASTA file not found: {path}")
    return parse_fasta(path.read_bytes(), str(path))


def parse_fasta(raw: bytes, path: str) -> pd.DataFrame:
    """FASTA bytes (a file's, or an upload's never written to disk); ``path`` names them in errors."""
    try:
        text = raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as err:
        line = raw[: err.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    chunks = ("\n" + text).split("\n>")
    if chunks[0].strip():
        line = next(i for i, s in enumerate(text.split("\n"), 1) if s.strip())
        raise ValueError(f"{path}: line {line}: expected a '>' header line, found {chunks[0].strip()[:60]!r}")
    if len(chunks) == 1:
        raise ValueError(f"{path}: no FASTA records (no '>' header line)")
    records = pd.Series(chunks[1:], dtype="string")
    parts = records.str.partition("\n")
    head, seq = parts[0], parts[2].str.replace(r"\s+", "", regex=True)
    line_of = (
        1
        + chunks[0].count("\n")
        + np.concatenate([[0], np.cumsum(records.str.count("\n").to_numpy(dtype=np.int64) + 1)[:-1]])
    )
    fields = head.str.split("|", expand=True)
    if fields.shape[1] > len(HEADER_FIELDS):
        bad = int(np.flatnonzero(fields[len(HEADER_FIELDS)].notna().to_numpy())[0])
        raise ValueError(
            f"{path}: line {line_of[bad]}: header has more than {len(HEADER_FIELDS)} '|'-separated fields "
            f"({'|'.join(HEADER_FIELDS)}): {head.iat[bad][:80]!r}"
        )
    table = pd.DataFrame({name: fields[j] if j in fields else pd.NA for j, name in enumerate(HEADER_FIELDS)})
    piped = head.str.contains("|", regex=False)
    table["processid"] = table["processid"].where(piped, head.str.strip().str.split(n=1).str[0])
    table["dna_barcode"] = seq
    return normalise_table(table)


def write_fasta(table: pd.DataFrame, path: str | Path) -> None:
    """One record per row: ``>processid|split|order|family|genus|species`` and the barcode on one line."""
    fields = [table[c].astype("string").fillna("") for c in HEADER_FIELDS]
    header = fields[0].str.cat(fields[1:], sep="|")
    body = ">" + header + "\n" + table["dna_barcode"].astype("string").fillna("") + "\n"
    Path(path).write_text("".join(body.tolist()), encoding="utf-8")
