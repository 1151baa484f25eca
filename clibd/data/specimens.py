"""The specimen table (docs/architecture.md): its columns, normalisation and bad-record checks.

Bad records (``validate_table``), each found with vectorised pandas operations:

- missing processid, duplicate processid (the first occurrence is kept);
- unknown split: a split named by no role of ``cfg.data.splits`` nor in ``splits.unused``
  (an empty split too). Skipped when the whole table has no split names (a source without
  a split column, e.g. new specimens to classify): roles then refuse it.
- missing label: a rank of ``cfg.data.required_ranks`` unknown on a row whose split is a
  key or query split (roles keys, test_*, val_*). The protocol scores these rows at
  order, family, genus and species, so a hole there is a bad record; training rows
  (pretrain) need no labels, and ranks are never required of them.
- empty or all-N barcode (only ``N``, gaps and whitespace), when the table is meant to carry DNA;
- missing image (``image_ref`` empty), when the table is meant to carry images. Only what
  the table knows: an absent or corrupt image file is found when it is decoded.

Policy ``error`` raises ``ValueError`` naming the first bad record (processid and row,
the 0-based record position in the source; for a CSV/TSV the file line is row + 2) and
its problem; ``skip`` drops every bad row, counted by its first reason in a ``SkipReport``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from clibd.config import SplitRoles
from clibd.data.bad_records import SkipReport
from clibd.data.roles import eval_splits, known_splits
from clibd.taxonomy import ALL_RANKS

SPECIMEN_COLUMNS: tuple[str, ...] = ("processid", "split", *ALL_RANKS, "dna_bin", "dna_barcode", "image_ref")
# The word the published CLIBD files and the BIOSCAN-1M TSV write for an unknown rank.
MISSING_RANK_WORD = "not_classified"
# Words that mean "unknown" in a rank or BIN column: that one, and BOLD data packages' "None".
_UNKNOWN_WORDS = (MISSING_RANK_WORD, "None")
POLICIES = ("error", "skip")

REASON_NO_ID = "missing processid"
REASON_DUPLICATE = "duplicate processid"
REASON_SPLIT = "unknown split"
REASON_DNA = "empty or all-N barcode"
REASON_IMAGE = "missing image"


def missing_label_reason(rank: str) -> str:
    return f"missing {rank} label"


# Raw values kept as read: cleaning of barcodes is the tokenizer's job, paths are exact.
_UNSTRIPPED = ("dna_barcode", "image_ref")


def _blank(s: pd.Series, words: tuple[str, ...]) -> pd.Series:
    """``s`` with ``words`` as ``<NA>``; ``s`` itself when it holds none (a 5 M-row barcode column is 3 GB)."""
    hit = s.isin(words).fillna(False)
    return s.mask(hit) if hit.any() else s


def _text(values: pd.Series, strip: bool) -> pd.Series:
    s = values.astype("string")
    if strip:
        s = s.str.strip()
    return _blank(s, ("",))


def normalise_table(table: pd.DataFrame) -> pd.DataFrame:
    """Contract columns first (added as ``<NA>`` when a source lacks them), text as pandas
    ``"string"``, empty strings and, in rank and BIN columns, the words ``not_classified`` and
    ``None`` (BOLD data packages) as ``<NA>``."""
    out = {}
    for col in SPECIMEN_COLUMNS:
        if col in table:
            s = _text(table[col], strip=col not in _UNSTRIPPED)
            unknown = col in ALL_RANKS or col == "dna_bin"
            out[col] = _blank(s, _UNKNOWN_WORDS) if unknown else s
        else:
            out[col] = pd.Series(pd.NA, index=table.index, dtype="string")
    for col in table.columns:
        if col not in out:
            is_text = pd.api.types.is_object_dtype(table[col]) or pd.api.types.is_string_dtype(table[col])
            out[col] = _text(table[col], strip=True) if is_text else table[col]
    return pd.DataFrame(out, index=table.index)


def _checks(
    table: pd.DataFrame,
    roles: Optional[SplitRoles],
    required_ranks: Sequence[str],
    require_dna: bool,
    require_image: bool,
) -> list[tuple[str, np.ndarray, Callable[[int], str]]]:
    """(reason, bad-row mask, problem text for row position i), in precedence order."""
    pid, split = table["processid"], table["split"]
    checks: list[tuple[str, np.ndarray, Callable[[int], str]]] = [
        (REASON_NO_ID, pid.isna().to_numpy(), lambda i: "no processid"),
    ]
    dup = (pid.duplicated(keep="first") & pid.notna()).to_numpy(dtype=bool)

    def first_row(i: int) -> object:
        return table.index[pid.eq(pid.iat[i]).fillna(False).to_numpy().argmax()]

    checks.append((REASON_DUPLICATE, dup, lambda i: f"duplicate processid (first at row {first_row(i)})"))
    if roles is not None and split.notna().any():
        known = known_splits(roles)
        bad_split = ~split.isin(known).to_numpy(dtype=bool)
        checks.append(
            (
                REASON_SPLIT,
                bad_split,
                lambda i: (
                    "no split"
                    if pd.isna(split.iat[i])
                    else f"split {split.iat[i]!r} is not one of the configured splits {sorted(known)} (data.splits)"
                ),
            )
        )
        on_eval = split.isin(eval_splits(roles)).to_numpy(dtype=bool)
        for rank in required_ranks:
            if rank not in ALL_RANKS:
                raise ValueError(f"data.required_ranks names {rank!r}; ranks are {list(ALL_RANKS)}")
            checks.append(
                (
                    missing_label_reason(rank),
                    on_eval & table[rank].isna().to_numpy(),
                    lambda i, rank=rank: (
                        f"no {rank} label, required on split {split.iat[i]!r} (a key/query split; data.required_ranks)"
                    ),
                )
            )
    if require_dna:
        dna = table["dna_barcode"]
        # only N, gaps, whitespace (spelled out: pandas runs \s through Python's re, not pyarrow)
        no_dna = (dna.isna() | dna.str.fullmatch(r"[Nn.\- \t\r\n\f\v]*").fillna(True)).to_numpy(dtype=bool)

        def dna_problem(i: int) -> str:
            return "empty barcode" if pd.isna(dna.iat[i]) or not dna.iat[i].strip() else "barcode is all N"

        checks.append((REASON_DNA, no_dna, dna_problem))
    if require_image:
        checks.append((REASON_IMAGE, table["image_ref"].isna().to_numpy(), lambda i: "no image"))
    return checks


def validate_table(
    table: pd.DataFrame,
    source_name: str,
    policy: str,
    *,
    roles: Optional[SplitRoles] = None,
    required_ranks: Sequence[str] = (),
    require_dna: bool = False,
    require_image: bool = False,
) -> tuple[pd.DataFrame, SkipReport]:
    """Apply the bad-record checks (module docstring) under ``policy`` (``error`` | ``skip``)."""
    if policy not in POLICIES:
        raise ValueError(f"data.bad_records must be one of {POLICIES}, got {policy!r}")
    report = SkipReport(read=len(table))
    flagged = np.zeros(len(table), dtype=bool)
    first_bad: list[tuple[int, str]] = []  # (row position, problem) of each check's first new bad row
    for reason, bad, problem in _checks(table, roles, required_ranks, require_dna, require_image):
        new = bad & ~flagged
        if not new.any():
            continue
        flagged |= new
        if policy == "error":
            i = int(new.argmax())
            first_bad.append((i, problem(i)))
        else:
            report.add(reason, table["processid"].iloc[np.flatnonzero(new)].fillna("<no processid>"))
    if first_bad:
        i, problem = min(first_bad)
        more = int(flagged.sum()) - 1
        tail = f"; {more} more bad record(s)" if more else ""
        raise ValueError(
            f"{source_name}: record {table['processid'].iat[i]!r} (row {table.index[i]}): {problem}{tail}. "
            "Fix the data or set data.bad_records=skip to drop and count bad records."
        )
    return table[~flagged].reset_index(drop=True), report
