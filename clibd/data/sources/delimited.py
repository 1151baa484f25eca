"""Read CSV/TSV (pyarrow, multi-threaded) and parquet into pandas with checked columns.

Text is read literally as pandas ``"string"`` (``NA``/``null`` stay words; empty cells
become ``<NA>`` later, in ``normalise_table``), unless a column is given a type. A UTF-8
BOM and CRLF line ends are accepted. A row with too few or too many fields is an error
naming the file line; a missing column is an error naming the column and the file.
Quotes (``"``) are honoured in ``.csv`` files only: TSV exports such as BOLD's are unquoted.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
PARQUET = (".parquet", ".pq")


def _pandas_type(t: pa.DataType) -> Optional[object]:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype()
    if pa.types.is_integer(t):
        return pd.api.types.pandas_dtype(str(t).replace("int", "Int").replace("uInt", "UInt"))
    return None


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas with nullable integers and ``"string"`` text."""
    return table.to_pandas(types_mapper=_pandas_type)


def header(path: Path, sep: str) -> list[str]:
    with open(path, "rb") as f:
        raw = f.readline()
    try:
        first = re.split("[\r\n]", raw.decode("utf-8-sig"), maxsplit=1)[0]  # CR alone ends a line too
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: line 1: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not first:
        raise ValueError(f"{path}: empty file, expected a header line")
    return next(csv.reader([first], delimiter=sep, quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE))


def check_columns(path: Path, present: Sequence[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(
            f"{path}: missing column {missing[0]!r} (all missing: {missing}; columns present: {list(present)})"
        )


def _read_csv(
    path: Path, sep: str, types: Mapping[str, pa.DataType], include: Sequence[str], threads: bool
) -> pa.Table:
    bad: list = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "error"

    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=threads),
            parse_options=pacsv.ParseOptions(
                delimiter=sep, quote_char='"' if sep == "," else False, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(include), strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as err:
        if not bad:
            raise ValueError(f"{path}: {err}") from None
        row = bad[0]
        if row.number is None and threads:  # the threaded reader does not know line numbers
            return _read_csv(path, sep, types, include, threads=False)
        raise ValueError(
            f"{path}: line {_file_line(path, row.number)}: expected {row.expected_columns} fields, "
            f"found {row.actual_columns}: {row.text[:120]!r}"
        ) from None


def _file_line(path: Path, row_number: int) -> int:
    """The file line of pyarrow's 1-based row number, which does not count blank lines (an error path only)."""
    lines = re.split(r"\r\n|\r|\n", path.read_bytes().decode("utf-8-sig", errors="replace"))
    non_blank = [i for i, line in enumerate(lines, 1) if line]
    return non_blank[row_number - 1] if row_number <= len(non_blank) else row_number


def table_columns(path: Path) -> list[str]:
    """The column names of a table file (its header line, or the parquet schema)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in PARQUET:
        return list(pq.read_schema(path).names)
    if suffix not in SEPARATORS:
        raise ValueError(f"{path}: unsupported table type {suffix!r}; use {sorted([*SEPARATORS, *PARQUET])}")
    return header(path, SEPARATORS[suffix])


def read_delimited(
    path: Path,
    required: Sequence[str] = (),
    types: Optional[Mapping[str, pa.DataType]] = None,
    columns: Optional[Sequence[str]] = None,
) -> pd.DataFrame:
    """``path`` (.csv/.tsv/.tab/.txt/.parquet): ``columns`` (default all) as pandas, ``required`` checked."""
    path = Path(path)
    present = table_columns(path)
    check_columns(path, present, required)
    suffix = path.suffix.lower()
    types = dict(types or {})
    if suffix in PARQUET:
        df = to_pandas(pq.read_table(path, columns=list(columns) if columns is not None else None))
        return df.astype({c: pd.StringDtype() for c in df.columns if pd.api.types.is_object_dtype(df[c])})
    sep = SEPARATORS[suffix]
    include = list(columns) if columns is not None else present
    column_types = {c: types.get(c, pa.string()) for c in include}
    if _header_only(path):  # pyarrow cannot parse a lone header without a line end
        return to_pandas(pa.table({c: pa.array([], type=t) for c, t in column_types.items()}))
    return to_pandas(_read_csv(path, sep, column_types, include, threads=True))


def _header_only(path: Path) -> bool:
    """No line end anywhere: the file is its header line."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if b"\n" in chunk or b"\r" in chunk:
                return False
    return True
