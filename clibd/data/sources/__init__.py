"""``read_specimens(cfg.data)``: any configured source -> (specimen table, skip report).

``data.format`` picks the reader; ``data.root`` is the dataset root (bioscan5m, bioscan1m)
or the file (hdf5, tabular, fasta). A wrong root, a missing file or a missing column fails
at once naming the expected path or column. ``data.split`` other than ``column`` then names
each row's split (``auto``: the BIOSCAN-5M rules on the table's labels; a split file:
``clibd.data.species_split``). Bad records then follow ``data.bad_records``
(clibd.data.specimens.validate_table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from clibd.config import DataConfig
from clibd.data.bad_records import SkipReport
from clibd.data.sources.bioscan1m import read_bioscan1m
from clibd.data.sources.bioscan5m import read_bioscan5m
from clibd.data.sources.delimited import table_columns
from clibd.data.sources.fasta import read_fasta
from clibd.data.sources.hdf5 import read_clibd_hdf5
from clibd.data.sources.tabular import read_tabular
from clibd.data.species_split import AUTO, COLUMN, auto_split, read_split_file
from clibd.data.specimens import validate_table

FORMATS = ("bioscan5m", "bioscan1m", "hdf5", "tabular", "fasta")
# Formats whose records always carry a barcode / an image (tabular: when it has the column).
_DNA_FORMATS = ("bioscan5m", "bioscan1m", "hdf5", "fasta")
_IMAGE_FORMATS = ("bioscan5m", "bioscan1m", "hdf5")
_MAPPED_FORMATS = ("tabular", "bioscan1m")


def _read(cfg: DataConfig, check_images: bool) -> pd.DataFrame:
    readers = {
        "bioscan5m": lambda: read_bioscan5m(cfg.root, cfg.image_package, check_images),
        "bioscan1m": lambda: read_bioscan1m(cfg.root, cfg.image_package, cfg.columns, check_images),
        "hdf5": lambda: read_clibd_hdf5(cfg.root),
        "tabular": lambda: read_tabular(cfg.root, cfg.columns),
        "fasta": lambda: read_fasta(cfg.root),
    }
    return readers[cfg.format]()


def _has_column(cfg: DataConfig, column: str) -> bool:
    """Whether a tabular source file provides ``column`` (mapped, or under our name)."""
    if cfg.format != "tabular":
        return False
    return column in cfg.columns or column in table_columns(Path(cfg.root))


def read_specimens(
    data_cfg: DataConfig, *, require_dna: Optional[bool] = None, require_image: Optional[bool] = None
) -> tuple[pd.DataFrame, SkipReport]:
    """Read, normalise and check the configured source.

    ``require_dna`` / ``require_image``: whether an empty barcode / a missing image is a bad
    record. ``None`` = when the source carries that modality (tabular: when the file has the
    column). ``require_image=False`` also skips checking that the image folder exists.
    """
    if data_cfg.format not in FORMATS:
        raise ValueError(f"data.format must be one of {FORMATS}, got {data_cfg.format!r}")
    if data_cfg.columns and data_cfg.format not in _MAPPED_FORMATS:
        raise ValueError(f"data.columns is used by formats {_MAPPED_FORMATS} only, not {data_cfg.format!r}")
    table = _read(data_cfg, check_images=require_image is not False)
    if data_cfg.split == AUTO:
        table["split"] = auto_split(table, data_cfg.split_seed)
    elif data_cfg.split != COLUMN:
        table["split"] = read_split_file(data_cfg.split, table["processid"])
    if require_dna is None:
        require_dna = data_cfg.format in _DNA_FORMATS or _has_column(data_cfg, "dna_barcode")
    if require_image is None:
        require_image = data_cfg.format in _IMAGE_FORMATS or _has_column(data_cfg, "image_ref")
    return validate_table(
        table,
        str(Path(data_cfg.root)),
        data_cfg.bad_records,
        roles=data_cfg.splits,
        required_ranks=data_cfg.required_ranks,
        require_dna=require_dna,
        require_image=require_image,
    )
