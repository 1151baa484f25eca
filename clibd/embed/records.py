"""New specimens' input records, read a bounded chunk at a time (``clibd classify`` / ``clibd
embed`` over files of any size; the server's uploads in memory).

Barcodes: every record of FASTA, CSV, TSV or parquet files becomes one row: ``id`` (the FASTA
id or the id column's value; ``<file>:<record>`` where it has none), ``file``, ``record``
(1-based in its file), ``sequence`` and ``problem`` (``<NA>``, or why the record cannot be
used, in words). Nothing is lost without a row:

- a record that is not UTF-8 text, or a table line with the wrong number of fields, costs
  that record only (``clibd.data.sources``);
- a file that cannot be read at all becomes one row: its path as id, no record number, the
  problem (``no 'sequence' column; ...``, ``not a readable parquet file``, ...);
- a file that fails part-way (an unterminated quote) keeps the records read so far and
  gets one row for the rest.

Photos: files as given (whatever their suffix, so a bad one gets its row) and folders
expanded to the files of every image format PIL opens (GIF, TIFF, WebP, ...), recursively,
sorted; other files in a folder are listed as ignored, never dropped unsaid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clibd.data.sources.delimited import iter_table, table_columns
from clibd.data.sources.fasta import FASTA_SUFFIXES, iter_fasta, parse_fasta

# Accepted column names, first match wins (BIOSCAN / BOLD / BarcodeBERT / generic spellings).
ID_COLUMNS = ("processid", "id", "sampleid", "name")
SEQUENCE_COLUMNS = ("dna_barcode", "nucleotides", "nuc", "sequence", "seq")
BARCODE_COLUMNS = ["id", "file", "record", "sequence", "problem"]
CHUNK_RECORDS = 4096  # records embedded, searched and written together: bounds memory, not speed
# Files are read in blocks of about a chunk's records (a barcode record is under 1 KiB).
RECORD_BYTES, BLOCK_FLOOR = 1024, 64 << 10


def image_suffixes() -> set[str]:
    """File name endings of every format PIL can open (``Image.registered_extensions``)."""
    Image.init()
    return {suffix for suffix, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def photo_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """``(photos, ignored)``: files as given, folders expanded to their image files (module docstring);
    ``ignored``: the other files found in those folders."""
    suffixes = image_suffixes()
    photos: list[Path] = []
    ignored: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            photos.append(path)
            continue
        for found in sorted(p for p in path.rglob("*") if p.is_file()):
            (photos if found.suffix.lower() in suffixes else ignored).append(found)
    return photos, ignored


def unreadable_row(file: str, problem: str) -> pd.DataFrame:
    """The one row of a barcode file that cannot be read (its path is its id)."""
    return pd.DataFrame(
        {"id": [file], "file": [file], "record": pd.array([None], "Int64"), "sequence": [""], "problem": [problem]}
    ).astype({"id": "string", "problem": "string", "sequence": "string"})


def _sequence_columns(name: str, present: Sequence[str]) -> tuple[str, str]:
    """The file's (id column, sequence column), or a ValueError naming what is missing."""
    lower = {c.lower(): c for c in present}
    id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None)
    seq_col = next((lower[c] for c in SEQUENCE_COLUMNS if c in lower), None)
    if id_col is None or seq_col is None:
        missing = " or ".join(what for what, col in (("id", id_col), ("barcode", seq_col)) if col is None)
        raise ValueError(
            f"{name}: no {missing} column; ids are read from one of {list(ID_COLUMNS)}, barcodes from one of "
            f"{list(SEQUENCE_COLUMNS)}; found {list(present)}"
        )
    return id_col, seq_col


def _raw_blocks(path: Path, data: Optional[bytes], block_bytes: int) -> Iterator[pd.DataFrame]:
    """Blocks of ``processid``, ``dna_barcode``, ``problem`` from one file (on disk, or ``data``)."""
    fasta = path.suffix.lower() in FASTA_SUFFIXES or not path.suffix
    if fasta or (data is not None and data.lstrip()[:1] == b">"):
        blocks = iter_fasta(path, block_bytes) if data is None else iter([parse_fasta(data, str(path), mark_bad=True)])
        for block in blocks:
            yield block[["processid", "dna_barcode", "problem"]]
        return
    id_col, seq_col = _sequence_columns(str(path), table_columns(path, data))
    for block in iter_table(path, list(dict.fromkeys([id_col, seq_col])), block_bytes, data=data):
        ids = block[id_col].str.strip().replace("", pd.NA)
        yield pd.DataFrame({"processid": ids, "dna_barcode": block[seq_col], "problem": block["problem"]})


def barcode_file_records(
    path: str | Path, data: Optional[bytes] = None, chunk: int = CHUNK_RECORDS
) -> Iterator[pd.DataFrame]:
    """One file's records in blocks of about ``chunk`` records (``BARCODE_COLUMNS``); ``data``: its bytes
    when it is not on disk (``path`` then only names it)."""
    path, record = Path(path), 0
    try:
        for raw in _raw_blocks(path, data, max(BLOCK_FLOOR, chunk * RECORD_BYTES)):
            numbers = pd.Series(range(record + 1, record + len(raw) + 1), dtype="Int64")
            fallback = f"{path}:" + numbers.astype("string")
            yield pd.DataFrame(
                {
                    "id": raw["processid"].astype("string").reset_index(drop=True).fillna(fallback),
                    "file": str(path),
                    "record": numbers,
                    "sequence": raw["dna_barcode"].astype("string").fillna("").reset_index(drop=True),
                    "problem": raw["problem"].astype("string").reset_index(drop=True),
                }
            )
            record += len(raw)
    except (OSError, ValueError) as err:
        problem = str(err).removeprefix(f"{path}: ")
        yield unreadable_row(str(path), problem if not record else f"after record {record}: {problem}")


def iter_barcode_records(paths: Sequence[str | Path], chunk: int = CHUNK_RECORDS) -> Iterator[pd.DataFrame]:
    """Every record of every file, in order, in chunks of at most ``chunk`` rows (``BARCODE_COLUMNS``)."""
    for path in paths:
        for block in barcode_file_records(path, chunk=chunk):
            for start in range(0, len(block), chunk):
                yield block.iloc[start : start + chunk].reset_index(drop=True)


def read_barcode_records(paths: Sequence[str | Path]) -> pd.DataFrame:
    """All records of the files at once (small inputs; ``clibd classify`` streams them)."""
    blocks = list(iter_barcode_records(paths))
    if not blocks:
        return pd.DataFrame({c: pd.Series([], dtype="string") for c in BARCODE_COLUMNS}).astype({"record": "Int64"})
    return pd.concat(blocks, ignore_index=True)


def count_records(paths: Sequence[str | Path]) -> int:
    """About how many records the barcode files hold (FASTA headers, table lines, parquet rows), read
    quickly for a progress bar's total; files that cannot be read count one (their row)."""
    total = 0
    for path in map(Path, paths):
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                total += pq.ParquetFile(path).metadata.num_rows
                continue
            fasta = path.suffix.lower() in FASTA_SUFFIXES
            with path.open("rb") as f:
                count, last = 0, b"\n"
                while block := f.read(1 << 24):
                    count += (last + block).count(b"\n>") if fasta else block.count(b"\n")
                    last = block[-1:]
            total += max(1, count if fasta else count - (last == b"\n"))
        except (OSError, pa.ArrowException):
            total += 1
    return total
