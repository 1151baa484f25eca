"""Rank names, the placeholder-species rule, taxonomy text and integer label codes."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# The seven ranks every specimen table carries, most general first.
ALL_RANKS: tuple[str, ...] = ("phylum", "class", "order", "family", "subfamily", "genus", "species")
# The ranks that retrieval is evaluated at and labels are coded for, in this order.
EVAL_RANKS: tuple[str, ...] = ("order", "family", "genus", "species")

# docs/datasets.md: a species name is a placeholder if it contains "malaise",
# starts lower-case, holds digits, two consecutive capitals, "aff", "n. sp", "sp.", "_",
# "?" or "." (the last subsumes "n. sp" and "sp.", kept for readability).
_PLACEHOLDER = re.compile(r"malaise|^[a-z]|\d|[A-Z]{2}|aff|n\. sp|sp\.|_|\?|\.")


def is_placeholder_species(name: str) -> bool:
    """True for names like "Aus sp. 1", "Aus malaise3" or "BIOUG12345-A12"."""
    return bool(_PLACEHOLDER.search(name))


def taxonomy_text(table: pd.DataFrame, template: str, missing_word: str) -> pd.Series:
    """One string per row from ``template``; a missing rank becomes ``missing_word``.

    Vectorised per rank (string concatenation of columns), not per row.
    """
    fields = re.findall(r"{(\w+)}", template)
    unknown = [f for f in fields if f not in ALL_RANKS]
    if unknown:
        raise ValueError(f"text template {template!r} names unknown ranks {unknown}; use {list(ALL_RANKS)}")
    pieces = re.split(r"{\w+}", template)
    out = pd.Series(pieces[0], index=table.index, dtype="object")
    for name, tail in zip(fields, pieces[1:]):
        col = table[name].astype("object").where(table[name].notna(), missing_word)
        out = out + col.astype(str) + tail
    return out


def label_codes(table: pd.DataFrame, ranks: tuple[str, ...] = EVAL_RANKS) -> np.ndarray:
    """Integer code per row and rank, ``-1`` where the rank is unknown.

    Codes index the sorted distinct names of this table: code query and key rows
    together (one table) when they must be compared.
    """
    codes = np.full((len(table), len(ranks)), -1, dtype=np.int64)
    for j, rank in enumerate(ranks):
        cat = pd.Categorical(table[rank], categories=sorted(table[rank].dropna().unique()))
        codes[:, j] = cat.codes
    return codes
