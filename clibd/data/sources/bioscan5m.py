"""BIOSCAN-5M as it ships (docs/datasets.md), the same root the ``bioscan-dataset`` package reads:

    <root>/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv   (23 columns)
    <root>/bioscan5m/images/<package>/<split>/<chunk>/<processid>.jpg

``root`` may also be the ``bioscan5m`` folder itself. ``chunk`` is the first 2 hex
characters of md5(processid) for pretrain, the first 1 for train and other_heldout, and
absent (no sub-folder) for the other splits. The CSV's ``chunk`` column is used where
filled (as bioscan-dataset does); where it is empty the chunk is computed (hashlib, one
call per such processid: a Python loop, but only over rows lacking a chunk). Filled
chunks are checked against the rule on an evenly spaced sample of rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from clibd.data.sources.delimited import read_delimited
from clibd.data.specimens import normalise_table
from clibd.taxonomy import ALL_RANKS

FOLDER = "bioscan5m"
METADATA_FILE = Path("metadata", "csv", "BIOSCAN_5M_Insect_Dataset_metadata.csv")
# The 23 columns in file order and their types (text unless typed).
COLUMN_TYPES: dict[str, pa.DataType] = {
    "processid": pa.string(),
    "sampleid": pa.string(),
    "taxon": pa.string(),
    **{rank: pa.string() for rank in ALL_RANKS},
    "dna_bin": pa.string(),
    "dna_barcode": pa.string(),
    "country": pa.string(),
    "province_state": pa.string(),
    "coord-lat": pa.float64(),
    "coord-lon": pa.float64(),
    "image_measurement_value": pa.float64(),
    "area_fraction": pa.float64(),
    "scale_factor": pa.float64(),
    "inferred_ranks": pa.uint8(),
    "split": pa.string(),
    "index_bioscan_1M_insect": pa.int64(),
    "chunk": pa.string(),
}
COLUMNS: tuple[str, ...] = tuple(COLUMN_TYPES)
# The contract columns every metadata file must hold; the others are read when present.
REQUIRED = ("processid", "split", *ALL_RANKS, "dna_bin", "dna_barcode")
CHUNK_CHARS = {"pretrain": 2, "train": 1, "other_heldout": 1}
SPLITS = ("pretrain", "train", "val", "test", "key_unseen", "val_unseen", "test_unseen", "other_heldout")
CHUNK_CHECK_SAMPLE = 10_000


def dataset_dir(root: str | Path) -> Path:
    """The ``bioscan5m`` folder under (or at) ``root``."""
    return find_dataset_dir(root, FOLDER, METADATA_FILE, "BIOSCAN-5M")


def md5_chunk(processid: str, split: str) -> str:
    """The image sub-folder of one specimen ('' for splits without chunks)."""
    return _md5_prefixes([processid], [split])[0]


def _md5_prefixes(processids: list[str], splits: list[str]) -> list[str]:
    return [hashlib.md5(p.encode()).hexdigest()[: CHUNK_CHARS.get(s, 0)] for p, s in zip(processids, splits)]


def _fill_chunks(meta: pd.DataFrame) -> pd.Series:
    chunk = (
        meta["chunk"].astype("string").str.strip()
        if "chunk" in meta
        else pd.Series(pd.NA, index=meta.index, dtype="string")
    )
    chunk = chunk.mask(chunk.eq("").fillna(False))
    todo = np.flatnonzero((chunk.isna() & meta["split"].isin(list(CHUNK_CHARS))).to_numpy(dtype=bool))
    if len(todo):
        ids = meta["processid"].iloc[todo].fillna("").tolist()
        chunk.iloc[todo] = _md5_prefixes(ids, meta["split"].iloc[todo].tolist())
    return chunk


def _check_chunks(meta: pd.DataFrame, chunk: pd.Series, source: Path) -> None:
    """Filled chunks must follow the md5 rule (sampled: a wrong layout shows on any row)."""
    rows = np.flatnonzero((chunk.notna() & meta["split"].isin(SPLITS) & meta["processid"].notna()).to_numpy(dtype=bool))
    if len(rows) > CHUNK_CHECK_SAMPLE:
        rows = rows[np.linspace(0, len(rows) - 1, CHUNK_CHECK_SAMPLE).astype(int)]
    ids, splits = meta["processid"].iloc[rows].tolist(), meta["split"].iloc[rows].tolist()
    got = chunk.iloc[rows].tolist()
    expected = _md5_prefixes(ids, splits)
    wrong = [j for j, (a, b) in enumerate(zip(got, expected)) if a != b]
    if wrong:
        j = wrong[0]
        raise ValueError(
            f"{source}: record {ids[j]!r} (row {rows[j]}): chunk column {got[j]!r} disagrees with the "
            f"BIOSCAN-5M rule for split {splits[j]!r} (md5 prefix {expected[j]!r})"
        )


def read_bioscan5m(root: str | Path, image_package: str = "cropped_256", check_images: bool = True) -> pd.DataFrame:
    """The specimen table of a BIOSCAN-5M root (every split; the 23 columns kept as extras)."""
    base = dataset_dir(root).resolve()
    image_dir = base / "images" / image_package
    if check_images and not image_dir.is_dir():
        raise FileNotFoundError(f"BIOSCAN-5M images not found: expected the folder {image_dir} (data.image_package)")
    csv_path = base / METADATA_FILE
    meta = read_delimited(csv_path, required=REQUIRED, types=COLUMN_TYPES)
    chunk = _fill_chunks(meta)
    _check_chunks(meta, chunk, csv_path)
    sub = (chunk + "/").fillna("")
    meta["chunk"] = chunk
    meta["image_ref"] = f"{image_dir}/" + meta["split"].str.strip() + "/" + sub + meta["processid"].str.strip() + ".jpg"
    return normalise_table(meta)


def find_dataset_dir(root: str | Path, folder: str, metadata_file: str, dataset: str) -> Path:
    """The ``folder`` under (or at) ``root`` that holds ``metadata_file``."""
    root = Path(root)
    for base in (root / folder, root):
        if (base / metadata_file).is_file():
            return base
    raise FileNotFoundError(
        f"{dataset} metadata not found: expected {root / folder / metadata_file} "
        f"(or {root / metadata_file} when data.root is the {folder} folder itself)"
    )
