"""A reference index's keys, held without a Python object per key (a library may hold millions).

- ``KeyIds``: the string ids as a numpy ``StringDType`` array (16 B an id of at most 15 UTF-8
  bytes, stored inline) and their sorted order (8 B a key). Each ``append`` merges the new ids'
  order into it (a sort of the batch and an O(N) merge, not a re-sort), refuses duplicates with
  a binary search, and ``positions`` finds ids the same way.
- ``compact_taxonomy``: rank columns (``clibd.taxonomy.ALL_RANKS``) as categoricals with sorted
  categories, i.e. integer codes (1-4 B a key) and each name once; other columns (``image_ref``)
  are kept as given. Arrow strings took ~134 B a key for the seven ranks of real BOLD rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from clibd.taxonomy import ALL_RANKS

STRINGS = np.dtypes.StringDType()
_CONVERT_ROWS = 1 << 20  # ids converted at a time: bounds the transient Python strings of a conversion


def as_strings(values: Sequence[str] | pd.Series | np.ndarray) -> np.ndarray:
    """``values`` as a numpy ``StringDType`` array (``str()`` of non-strings), converted in slices so
    that a column of millions never exists as Python strings all at once."""
    n = len(values)
    parts = [
        np.asarray(values[i : i + _CONVERT_ROWS], dtype=object).astype(STRINGS) for i in range(0, n, _CONVERT_ROWS)
    ]
    return np.concatenate(parts) if parts else np.array([], dtype=STRINGS)


class KeyIds:
    """Unique string ids in position order, with their sorted order for look-ups."""

    def __init__(self, ids: np.ndarray | None = None, order: np.ndarray | None = None) -> None:
        """An empty set, or saved ``ids`` with their ``order`` (``np.argsort(ids)``; computed when None)."""
        self.ids = np.array([], dtype=STRINGS) if ids is None else ids
        self.order = np.argsort(self.ids, kind="stable") if order is None else order
        if len(self.order) != len(self.ids):
            raise ValueError(f"{len(self.order)} sorted positions for {len(self.ids)} ids")

    def __len__(self) -> int:
        return len(self.ids)

    def _find(self, sorted_query: np.ndarray) -> np.ndarray:
        """Position of each (sorted or not) query id among the ids, -1 where absent."""
        if not len(self.ids):
            return np.full(len(sorted_query), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ids, sorted_query, sorter=self.order), len(self.ids) - 1)
        position = np.asarray(self.order[at], dtype=np.int64)
        return np.where(self.ids[position] == sorted_query, position, -1)

    def positions(self, query: Sequence[str]) -> np.ndarray:
        """Each id's key position (int64), ``-1`` for an id not held."""
        return self._find(as_strings(query))

    def append(self, new: np.ndarray) -> None:
        """Add ``new`` ids (a ``StringDType`` array) after the others; duplicates are an error naming a few."""
        new_order = np.argsort(new, kind="stable")
        sorted_new = new[new_order]
        repeated = sorted_new[1:][sorted_new[1:] == sorted_new[:-1]]
        held = sorted_new[self._find(sorted_new) >= 0]
        if len(repeated) or len(held):
            dup = sorted(set(repeated.tolist()) | set(held.tolist()))
            raise ValueError(f"duplicate key ids, e.g. {dup[:5]}")
        # Merge two sorted runs: each new id goes before the first held id greater than it.
        insert_at = np.searchsorted(self.ids, sorted_new, sorter=self.order) if len(self.ids) else 0
        self.order = np.insert(np.asarray(self.order, dtype=np.int64), insert_at, new_order + len(self.ids))
        self.ids = np.concatenate([self.ids, new])


def compact_taxonomy(frame: pd.DataFrame) -> pd.DataFrame:
    """Rank columns as categoricals with sorted ``string`` categories (missing ranks stay missing);
    the same frame, unchanged in content, whichever dtype its ranks came in (idempotent)."""
    out = {}
    for name in frame.columns:
        column = frame[name]
        if name in ALL_RANKS:
            if not isinstance(column.dtype, pd.CategoricalDtype):
                column = column.astype("string").astype("category")
            names = column.cat.categories
            categories = pd.Index(names.astype("string")).sort_values()
            if not names.equals(categories) or names.dtype != categories.dtype:
                column = column.cat.rename_categories(names.astype("string")).cat.reorder_categories(categories)
        out[name] = column.reset_index(drop=True)
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def join_taxonomy(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Compact frames (``compact_taxonomy``) of successive batches as one: categorical columns by
    ``union_categoricals`` (codes, never strings per key), the others concatenated."""
    if len(frames) == 1:
        return frames[0]
    out = {}
    for name in frames[0].columns:
        parts = [frame[name] for frame in frames]
        if isinstance(parts[0].dtype, pd.CategoricalDtype):
            out[name] = pd.Series(pd.api.types.union_categoricals(parts, ignore_order=True))
        else:
            out[name] = pd.concat(parts, ignore_index=True)
    return compact_taxonomy(pd.DataFrame(out))
