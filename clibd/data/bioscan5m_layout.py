"""The BIOSCAN-5M file layout as the dataset ships it (REFERENCE.md section 1).

One place for the facts that both the reader and the demo writer rely on: where the
metadata CSV lives, its 23 columns in order with their dtypes, the split names, and
the image chunk rule.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

BASE_FOLDER = "bioscan5m"
METADATA_CSV = Path(BASE_FOLDER, "metadata", "csv", "BIOSCAN_5M_Insect_Dataset_metadata.csv")

# The 23 columns in file order, with the dtypes the dataset's own loader reads them as.
METADATA_DTYPES: dict[str, str] = {
    "processid": "string",
    "sampleid": "string",
    "taxon": "category",
    "phylum": "category",
    "class": "category",
    "order": "category",
    "family": "category",
    "subfamily": "category",
    "genus": "category",
    "species": "category",
    "dna_bin": "category",
    "dna_barcode": "string",
    "country": "category",
    "province_state": "category",
    "coord-lat": "float64",
    "coord-lon": "float64",
    "image_measurement_value": "float64",
    "area_fraction": "float64",
    "scale_factor": "float64",
    "inferred_ranks": "uint8",
    "split": "string",
    "index_bioscan_1M_insect": "Int64",
    "chunk": "string",
}
METADATA_COLUMNS: tuple[str, ...] = tuple(METADATA_DTYPES)

SPLITS: tuple[str, ...] = (
    "pretrain", "train", "val", "test", "key_unseen", "val_unseen", "test_unseen", "other_heldout"
)
SEEN_SPLITS: tuple[str, ...] = ("train", "val", "test")
UNSEEN_SPLITS: tuple[str, ...] = ("key_unseen", "val_unseen", "test_unseen")

# Hex characters of md5(processid) that name the image sub-folder; other splits have none.
CHUNK_HEX_CHARS: dict[str, int] = {"pretrain": 2, "train": 1, "other_heldout": 1}


def image_chunks(processids: pd.Series, splits: pd.Series) -> pd.Series:
    """The ``chunk`` column: md5-prefix sub-folder per record, ``<NA>`` where the split has none."""
    width = splits.map(CHUNK_HEX_CHARS).astype("Int64").to_numpy(na_value=0)
    digests = [hashlib.md5(pid.encode()).hexdigest()[:2] for pid in processids]
    prefix = pd.Series(digests, index=processids.index, dtype="string")
    return prefix.where(width == 2, prefix.str[:1]).where(width > 0)


def image_relpaths(table: pd.DataFrame, image_package: str = "cropped_256") -> pd.Series:
    """``images/<package>/<split>/[<chunk>/]<processid>.jpg`` relative to the ``bioscan5m`` folder."""
    chunk_dir = (table["chunk"].astype("string") + "/").fillna("")
    return f"images/{image_package}/" + table["split"].astype("string") + "/" + chunk_dir + table["processid"] + ".jpg"
