"""Barcodes from FASTA, and FASTA written from a specimen table.

Accepted headers (after ``>``):

- ``id`` or ``id description``: the id is the first word; the description is dropped;
- ``id|split|order|family|genus|species``: fields separated by ``|`` (they may hold spaces,
  e.g. a species name; trailing fields may be left out; an empty field is unknown).

Sequence lines are joined with all whitespace removed; CRLF and a UTF-8 BOM are accepted.
Text before the first header is an error naming the line. A record that is not UTF-8 text,
or whose header has more than 6 fields, is an error naming its line (:func:`read_fasta`, a
dataset), or, read with ``mark_bad`` (new specimens: :func:`iter_fasta`), costs that record
only: its row keeps the id its header gives and says what is wrong in ``problem``.

:func:`iter_fasta` reads a file of any size in blocks of about ``block_bytes`` (whole
records each), so memory stays bounded by the block, not the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from clibd.data.specimens import normalise_table

HEADER_FIELDS = ("processid", "split", "order", "family", "genus", "species")
BOM = b"\xef\xbb\xbf"
BLOCK_BYTES = 4 << 20
FASTA_SUFFIXES = {".fa", ".fasta", ".fas", ".fna"}


def read_fasta(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FASTA file not found: {path}")
    return parse_fasta(path.read_bytes(), str(path))


def iter_fasta(path: str | Path, block_bytes: int = BLOCK_BYTES, mark_bad: bool = True) -> Iterator[pd.DataFrame]:
    """The records of a FASTA file, a block of whole records at a time (:func:`parse_fasta` each)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FASTA file not found: {path}")
    line, carry, first = 1, b"", True
    with path.open("rb") as f:
        if f.read(len(BOM)) != BOM:
            f.seek(0)
        while True:
            block = f.read(block_bytes)
            data = carry + block
            if block:
                cut = max(data.rfind(b"\n>"), data.rfind(b"\r>")) + 1  # the last record begun may go on
                if not data[:cut].strip():  # no whole record yet (or blank lines before the first)
                    carry = data
                    continue
                data, carry = data[:cut], data[cut:]
            if data or first:
                yield parse_fasta(data, str(path), first_line=line, mark_bad=mark_bad)
                line += _line_ends(data)
                first = False
            if not block:
                return


def _line_ends(raw: bytes) -> int:
    return raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n")


def _decode_each(pieces: list[bytes], first_line: int) -> tuple[list[str], list[object]]:
    """Texts of FASTA record pieces decoded one by one (the rare path: the whole was not UTF-8); a
    piece that fails keeps its lines (undecodable bytes replaced) and gets a problem naming its line."""
    texts: list[str] = []
    problems: list[object] = []
    line = first_line - 1  # pieces start with the '\n' their split removed, the first one excepted
    for i, piece in enumerate(pieces):
        try:
            texts.append(piece.decode("utf-8"))
            problems.append(pd.NA)
        except UnicodeDecodeError as err:
            texts.append(piece.decode("utf-8", errors="replace"))
            at = line + piece[: err.start].count(b"\n") + (1 if i else 0)
            problems.append(f"line {at}: not UTF-8 text (byte 0x{piece[err.start]:02x})")
        line += piece.count(b"\n") + (1 if i else 0)
    return texts, problems


def parse_fasta(raw: bytes, path: str, first_line: int = 1, mark_bad: bool = False) -> pd.DataFrame:
    """FASTA bytes (a file's, a block of one, or an upload's never written to disk) -> specimen table;
    ``path`` names them in errors, ``first_line`` is the file line ``raw`` starts at. ``mark_bad``: a
    bad record gets a ``problem`` column text (``<NA>`` for good ones) instead of failing the whole."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if first_line == 1:
        raw = raw.removeprefix(BOM)
    try:
        chunks, problems = ("\n" + raw.decode("utf-8")).split("\n>"), None
    except UnicodeDecodeError as err:
        if not mark_bad:
            line = first_line + raw[: err.start].count(b"\n")
            raise ValueError(f"{path}: line {line}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        chunks, problems = _decode_each((b"\n" + raw).split(b"\n>"), first_line)
    if chunks[0].strip():
        line = first_line - 1 + next(i for i, s in enumerate(chunks[0].split("\n")) if s.strip())
        raise ValueError(f"{path}: line {line}: expected a '>' header line, found {chunks[0].strip()[:60]!r}")
    if len(chunks) == 1:
        if first_line > 1:
            return _table(pd.Series([], dtype="string"), pd.Series([], dtype="string"), mark_bad)
        raise ValueError(f"{path}: no FASTA records (no '>' header line)")
    records = pd.Series(chunks[1:], dtype="string")
    parts = records.str.partition("\n")
    head, seq = parts[0], parts[2].str.replace(r"\s+", "", regex=True)
    problem = pd.Series(problems[1:] if problems else pd.NA, index=records.index, dtype="string")
    line_of = (
        first_line
        + chunks[0].count("\n")
        + np.concatenate([[0], np.cumsum(records.str.count("\n").to_numpy(dtype=np.int64) + 1)[:-1]])
    )
    too_many = head.str.count(r"\|").to_numpy(dtype=np.int64) >= len(HEADER_FIELDS)
    if too_many.any() and not mark_bad:
        bad = int(np.flatnonzero(too_many)[0])
        raise ValueError(
            f"{path}: line {line_of[bad]}: header has more than {len(HEADER_FIELDS)} '|'-separated fields "
            f"({'|'.join(HEADER_FIELDS)}): {head.iat[bad][:80]!r}"
        )
    if too_many.any():
        lines = pd.Series(line_of, index=records.index).astype(str)
        message = "line " + lines + f": header has more than {len(HEADER_FIELDS)} '|'-separated fields"
        problem = problem.mask(pd.Series(too_many, index=records.index), message)
    seq = seq.mask(problem.notna(), "")
    return _table(head, seq, mark_bad, problem)


def _table(head: pd.Series, seq: pd.Series, mark_bad: bool, problem: pd.Series | None = None) -> pd.DataFrame:
    fields = head.str.split("|", n=len(HEADER_FIELDS) - 1, expand=True) if len(head) else pd.DataFrame()
    table = pd.DataFrame(
        {name: fields[j] if j in fields else pd.NA for j, name in enumerate(HEADER_FIELDS)}, index=head.index
    )
    piped = head.str.contains("|", regex=False)
    first_word = head.str.strip().str.split(n=1).str[0] if len(head) else head
    table["processid"] = table["processid"].where(piped, first_word)
    table["dna_barcode"] = seq
    if mark_bad:
        table["problem"] = problem if problem is not None else pd.Series(pd.NA, index=head.index, dtype="string")
    return normalise_table(table)


def write_fasta(table: pd.DataFrame, path: str | Path) -> None:
    """One record per row: ``>processid|split|order|family|genus|species`` and the barcode on one line."""
    fields = [table[c].astype("string").fillna("") for c in HEADER_FIELDS]
    header = fields[0].str.cat(fields[1:], sep="|")
    body = ">" + header + "\n" + table["dna_barcode"].astype("string").fillna("") + "\n"
    Path(path).write_text("".join(body.tolist()), encoding="utf-8")
