"""Held-out species of a labelled table: the evaluation's protocol, and ``data.split: auto``.

* :func:`unseen_species_split` (the DNA benchmark's protocol, and how a reference library built
  from a table calibrates itself, ``clibd.index.calibration``): in every group of ``rank`` (genus,
  or family for a file with few multi-species genera) with two or more species one species
  (seeded choice) is unseen: all its rows query. Each seen species' rows are shuffled and
  halved, keys first (so a species with a single sample is a key only).
* :func:`auto_split` (``data.split: auto``): the BIOSCAN-5M split names from the same draws.
  Rows without genus or species are ``pretrain`` (training rows without a species label).
  Seen species: their key half is ``train`` (training rows and seen keys), the rest queries,
  ``val`` or ``test``. Unseen species (never trained on): their key half is ``key_unseen``, the
  rest ``val_unseen`` or ``test_unseen``. A query row is a validation row with probability
  ``VAL_SHARE`` (seeded), a test row otherwise. With the default ``data.splits`` roles this is
  BIOSCAN-5M's protocol: keys = train + key_unseen, queries = test / test_unseen.
* :func:`read_split_file` / :func:`write_split_file`: the ``processid``, ``split`` TSV that
  ``python train.py`` writes beside a run made with ``data.split: auto`` (``OUT/split.tsv``), so
  that its evaluation reads exactly the same rows in the same roles.

Every draw comes from one ``numpy.random.default_rng(seed)`` in a fixed order over rows sorted
as read, so one table and one seed always give the same split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clibd.config import SPLIT_AUTO, SPLIT_COLUMN

ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN = "key", "query_seen", "query_unseen"
UNSEEN_RANKS = ("genus", "family")  # ranks whose groups can each give up one unseen species
VAL_SHARE = 1 / 3  # of the query rows: BIOSCAN-5M has 1 val row for ~2.7 test rows
AUTO, COLUMN = SPLIT_AUTO, SPLIT_COLUMN  # data.split: computed here | the table's own split column
SPLIT_FILE = "split.tsv"


def _unseen_species(table: pd.DataFrame, rng: np.random.Generator, rank: str) -> set:
    """One species per group of ``rank`` holding two or more, drawn in sorted group order."""
    pairs = table[[rank, "species"]].drop_duplicates().sort_values([rank, "species"])
    multi = pairs.groupby(rank)["species"].transform("size") >= 2
    candidates = pairs[multi].groupby(rank)["species"].agg(list)
    return {species[rng.integers(len(species))] for species in candidates}


def _key_half(table: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Per row, whether it is in the first half (rounded up) of its species in a seeded shuffle."""
    order = rng.permutation(len(table))
    position = np.empty(len(table), dtype=np.int64)
    position[order] = table.iloc[order].groupby("species").cumcount().to_numpy()
    size = table.groupby("species")["species"].transform("size").to_numpy()
    return position < np.ceil(size / 2)


def unseen_species_split(table: pd.DataFrame, seed: int = 0, rank: str = "genus") -> pd.Series:
    """Role of every row: ``key``, ``query_seen`` or ``query_unseen`` (module docstring).
    Rows without ``rank`` or species are rejected: the protocol needs both."""
    if rank not in UNSEEN_RANKS:
        raise ValueError(f"unseen rank {rank!r}: choose one of {UNSEEN_RANKS}")
    missing = table[rank].isna() | table["species"].isna()
    if missing.any():
        first = table.loc[missing, "processid"].iloc[0]
        raise ValueError(f"{int(missing.sum())} rows lack {rank} or species (first: {first}); drop them first")
    rng = np.random.default_rng(seed)
    is_unseen = table["species"].isin(_unseen_species(table, rng, rank)).to_numpy()
    is_key = _key_half(table, rng)
    roles = np.where(is_unseen, ROLE_UNSEEN, np.where(is_key, ROLE_KEY, ROLE_SEEN))
    return pd.Series(roles, index=table.index, name="role")


def auto_split(table: pd.DataFrame, seed: int = 0) -> pd.Series:
    """BIOSCAN-5M split names for every row (module docstring)."""
    labelled = (table["genus"].notna() & table["species"].notna()).to_numpy()
    rows = table[labelled]
    rng = np.random.default_rng(seed)
    unseen = rows["species"].isin(_unseen_species(rows, rng, "genus")).to_numpy()
    key = _key_half(rows, rng)
    val = rng.random(len(rows)) < VAL_SHARE
    names = np.select(
        [~unseen & key, ~unseen & val, ~unseen, key, val],
        ["train", "val", "test", "key_unseen", "val_unseen"],
        "test_unseen",
    )
    split = np.full(len(table), "pretrain", dtype=object)
    split[labelled] = names
    return pd.Series(split, index=table.index, name="split", dtype="string")


def write_split_file(table: pd.DataFrame, directory: str | Path) -> Path:
    """``directory/split.tsv``: each row's ``processid`` and ``split``, in table order."""
    path = Path(directory) / SPLIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    table[["processid", "split"]].to_csv(path, sep="\t", index=False)
    return path


def read_split_file(path: str | Path, processids: pd.Series) -> pd.Series:
    """The split of each of ``processids`` from a split file; ``<NA>`` for ids the file lacks (an
    unknown split, a bad record). A missing file or column is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.split: split file not found: {path} (or use 'auto' or 'column')")
    splits = pd.read_csv(path, sep="\t", dtype="string", keep_default_na=False)
    missing = [c for c in ("processid", "split") if c not in splits]
    if missing:
        raise ValueError(f"{path}: a split file needs columns processid and split; missing {missing}")
    by_id = splits.drop_duplicates("processid").set_index("processid")["split"]
    return pd.Series(by_id.reindex(processids.astype("string")).to_numpy(), index=processids.index, dtype="string")
