"""Read CSV/TSV (pyarrow, multi-threaded) and parquet into pandas with checked columns.

Text is read literally as pandas ``"string"`` (``NA``/``null`` stay words; empty cells
become ``<NA>`` later, in ``normalise_table``), unless a column is given a type. A UTF-8
BOM and CRLF line ends are accepted. A row with too few or too many fields is an error
naming the file line; a missing column is an error naming the column and the file.
Quotes (``"``) are honoured in ``.csv`` files only: TSV exports such as BOLD's are unquoted.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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


def header(path: Path, sep: str, data: Optional[bytes] = None) -> list[str]:
    """The header line's column names (``data``: the file's bytes when it is not on disk)."""
    with _open(path, data) as f:
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


def table_columns(path: Path, data: Optional[bytes] = None) -> list[str]:
    """The column names of a table file (its header line, or the parquet schema); ``data``: the
    file's bytes when it is not on disk (an upload; ``path`` then only names it)."""
    path = Path(path)
    if data is None and not path.is_file():
        raise FileNotFoundError(f"table file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in PARQUET:
        try:
            return list(pq.read_schema(path if data is None else pa.BufferReader(data)).names)
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from None
    if suffix not in SEPARATORS:
        raise ValueError(f"{path}: unsupported table type {suffix!r}; use {sorted([*SEPARATORS, *PARQUET])}")
    return header(path, SEPARATORS[suffix], data)


def _open(path: Path, data: Optional[bytes]) -> BinaryIO:
    return io.BytesIO(data) if data is not None else open(path, "rb")


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


def _header_only(path: Path, data: Optional[bytes] = None) -> bool:
    """No line end anywhere: the file is its header line."""
    with _open(path, data) as f:
        while chunk := f.read(1 << 20):
            if b"\n" in chunk or b"\r" in chunk:
                return False
    return True


def iter_table(
    path: Path, columns: Sequence[str], block_bytes: int = 4 << 20, data: Optional[bytes] = None
) -> Iterator[pd.DataFrame]:
    """``columns`` of a CSV/TSV/parquet file as pandas ``"string"``, a block of about ``block_bytes``
    at a time (memory bounded by the block, not the file), with a ``problem`` column (``<NA>`` for
    good rows). A cell that is not UTF-8 text costs its row (empty cells, the problem naming the column);
    a line with too few or too many fields is given its own row (empty cells, the problem naming
    the line) after the rows of its block. ``data``: the file's bytes when it is not on disk."""
    path = Path(path)
    check_columns(path, table_columns(path, data), columns)
    if path.suffix.lower() in PARQUET:
        try:
            parquet = pq.ParquetFile(path if data is None else pa.BufferReader(data))
            for batch in parquet.iter_batches(batch_size=max(1, block_bytes // 1024), columns=list(columns)):
                table = to_pandas(pa.Table.from_batches([batch])).astype("string")
                yield _with_problems(table, [], pd.Series(pd.NA, dtype="string"))
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from None
        return
    if _header_only(path, data):
        return
    sep = SEPARATORS[path.suffix.lower()]
    bad: list = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    reader = _open_csv(
        path,
        path if data is None else pa.BufferReader(data),
        read_options=pacsv.ReadOptions(use_threads=False, block_size=block_bytes),  # use_threads=False: line numbers
        parse_options=pacsv.ParseOptions(
            delimiter=sep, quote_char='"' if sep == "," else False, invalid_row_handler=on_invalid
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.binary() for c in columns}, include_columns=list(columns), strings_can_be_null=False
        ),
    )
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowException as err:  # e.g. an unterminated quote: the rest of the file cannot be split
            raise ValueError(f"{path}: {str(err).splitlines()[0]}") from None
        table, problem = _decoded(batch)
        runs_on = np.logical_or.reduce([table[c].str.contains(r"[\r\n]", regex=True).to_numpy(bool) for c in table])
        problem = problem.fillna(pd.Series(UNTERMINATED, index=problem.index).where(runs_on))
        yield _with_problems(table, bad, problem)
        bad.clear()
    if bad:  # a bad line after the last good block
        yield _with_problems(pd.DataFrame({c: pd.Series([], dtype="string") for c in columns}), bad, pd.Series([]))


UNTERMINATED = "a quoted cell runs over the end of its line (an unterminated quote?): the next lines may be in it"


def _open_csv(path: Path, source: Path | pa.BufferReader, **options) -> pacsv.CSVStreamingReader:
    try:
        return pacsv.open_csv(source, **options)
    except pa.ArrowException as err:
        raise ValueError(f"{path}: {str(err).splitlines()[0]}") from None


def _decoded(batch: pa.RecordBatch) -> tuple[pd.DataFrame, pd.Series]:
    """A block's binary cells as text: one cast per column; only a block holding bytes that are not
    UTF-8 is decoded cell by cell, and its bad rows get empty cells and a problem."""
    columns, problem = {}, pd.Series(pd.NA, index=range(batch.num_rows), dtype="string")
    for name, cells in zip(batch.schema.names, batch.columns):
        try:
            columns[name] = pc.cast(cells, pa.string()).to_pandas(types_mapper=_pandas_type)
        except pa.ArrowInvalid:
            raw = cells.to_pylist()
            text = [value.decode("utf-8", errors="replace") for value in raw]
            bad = pd.Series([v.encode("utf-8", errors="surrogatepass") != r for v, r in zip(text, raw)])
            columns[name] = pd.Series(text, dtype="string").mask(bad, "")
            problem = problem.fillna(pd.Series(f"column {name!r} is not UTF-8 text", index=problem.index).where(bad))
    return pd.DataFrame(columns), problem


def _with_problems(table: pd.DataFrame, bad: list, problem: pd.Series) -> pd.DataFrame:
    """``table`` with its ``problem`` column, then one row (empty cells) per bad line."""
    table = table.assign(problem=problem.reindex(range(len(table))).astype("string").to_numpy())
    if not bad:
        return table
    lines = pd.DataFrame({c: pd.Series([""] * len(bad), dtype="string") for c in table.columns})
    lines["problem"] = pd.Series(
        [f"line {row.number}: expected {row.expected_columns} fields, found {row.actual_columns}" for row in bad],
        dtype="string",
    )
    return pd.concat([table, lines], ignore_index=True)
