"""BIOSCAN-1M as it ships (the layout the ``bioscan-dataset`` package reads):

    <root>/bioscan1m/BIOSCAN_Insect_Dataset_metadata.tsv
    <root>/bioscan1m/images/<package>/part<chunk_number>/<image_file>
    <root>/bioscan1m/CLIBD_partitioning/<split>.txt      (optional: sampleids, one a line)

``root`` may also be the ``bioscan1m`` folder itself. Barcodes are ``nucraw`` (or
``nucleotides``), the BIN is ``uri``; ``not_classified`` ranks become ``<NA>``.
The split of each specimen comes from, in this order: ``data.columns.split`` (a column of
the TSV, e.g. ``large_diptera_family``), the CLIBD partition files (split names
``no_split``, ``train_seen``, ``seen_keys``, ``val_seen``, ... as in CLIBD's own 1M split),
or a ``split`` column. A sampleid in two partition files is an error; one in none gets
no split (an "unknown split" bad record).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from clibd.data.sources.bioscan5m import find_dataset_dir
from clibd.data.sources.delimited import header, read_delimited
from clibd.data.specimens import normalise_table
from clibd.taxonomy import ALL_RANKS

FOLDER = "bioscan1m"
METADATA_FILE = "BIOSCAN_Insect_Dataset_metadata.tsv"
PARTITION_DIR = "CLIBD_partitioning"
BARCODE_COLUMNS = ("nucraw", "nucleotides")
REQUIRED = ("processid", "sampleid", "uri", "image_file", "chunk_number", *ALL_RANKS)


def dataset_dir(root: str | Path) -> Path:
    return find_dataset_dir(root, FOLDER, METADATA_FILE, "BIOSCAN-1M")


def _partition_splits(folder: Path, sampleids: pd.Series) -> pd.Series:
    parts = []
    for path in sorted(folder.glob("*.txt")):
        ids = pd.read_csv(path, header=None, names=["sampleid"], dtype="string", skip_blank_lines=True)
        parts.append(ids.assign(split=path.stem))
    if not parts:
        raise FileNotFoundError(f"{folder}: no partition files (<split>.txt) found")
    members = pd.concat(parts, ignore_index=True)
    members["sampleid"] = members["sampleid"].str.strip()
    twice = members["sampleid"].duplicated(keep=False)
    if twice.any():
        first = members[twice].sort_values("sampleid").head(2)
        raise ValueError(
            f"{folder}: sampleid {first['sampleid'].iat[0]!r} is in two partitions "
            f"({first['split'].iat[0]!r} and {first['split'].iat[1]!r})"
        )
    return sampleids.str.strip().map(members.set_index("sampleid")["split"]).astype("string")


def read_bioscan1m(
    root: str | Path,
    image_package: str = "cropped_256",
    columns: Mapping[str, str] | None = None,
    check_images: bool = True,
) -> pd.DataFrame:
    base = dataset_dir(root).resolve()
    tsv = base / METADATA_FILE
    image_dir = base / "images" / image_package
    if check_images and not image_dir.is_dir():
        raise FileNotFoundError(f"BIOSCAN-1M images not found: expected the folder {image_dir} (data.image_package)")
    columns = dict(columns or {})
    unknown = sorted(set(columns) - {"split"})
    if unknown:
        raise ValueError(f"data.columns for bioscan1m may only map 'split', got {unknown}")
    present = header(tsv, "\t")
    barcode = next((c for c in BARCODE_COLUMNS if c in present), None)
    if barcode is None:
        raise ValueError(
            f"{tsv}: missing column {BARCODE_COLUMNS[0]!r} (or {BARCODE_COLUMNS[1]!r}) holding the barcodes"
        )
    split_col = columns.get("split") or (
        "split" if "split" in present and not (base / PARTITION_DIR).is_dir() else None
    )
    required = [*REQUIRED, barcode, *([split_col] if split_col else [])]
    meta = read_delimited(tsv, required=required, columns=list(dict.fromkeys(required)))
    if split_col:
        split = meta[split_col]
    elif (base / PARTITION_DIR).is_dir():
        split = _partition_splits(base / PARTITION_DIR, meta["sampleid"])
    else:
        raise ValueError(
            f"{tsv}: no split information: expected partition files in {base / PARTITION_DIR}, "
            "a 'split' column, or data.columns.split naming a column"
        )
    image_file, part = meta["image_file"].str.strip(), meta["chunk_number"].str.strip()
    image_ref = (f"{image_dir}/part" + part + "/" + image_file).mask((image_file.eq("") | part.eq("")).fillna(True))
    table = meta.drop(columns=[c for c in (barcode, "uri", split_col) if c]).assign(
        split=split,
        dna_bin=meta["uri"],
        dna_barcode=meta[barcode],
        image_ref=image_ref,
    )
    return normalise_table(table)
