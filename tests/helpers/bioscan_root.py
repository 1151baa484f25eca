"""Tiny dataset roots in the shipped BIOSCAN layouts, for tests (any engineer's).

Written independently of clibd's readers (column lists and paths spelled out here from
REFERENCE.md and the bioscan-dataset package), so a reader bug cannot hide in a shared constant.

``make_bioscan5m_root(tmp_path)`` writes 14 specimens over all 8 splits (using processids
that bioscan-dataset's integrity check looks for) and returns their metadata; every image
is a distinct few-hundred-byte JPEG.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from PIL import Image

BIOSCAN5M_COLUMNS = [
    "processid", "sampleid", "taxon", "phylum", "class", "order", "family", "subfamily", "genus",
    "species", "dna_bin", "dna_barcode", "country", "province_state", "coord-lat", "coord-lon",
    "image_measurement_value", "area_fraction", "scale_factor", "inferred_ranks", "split",
    "index_bioscan_1M_insect", "chunk",
]  # fmt: skip

# (processid, split, order, family, subfamily, genus, species)
_SPECIMENS = [
    ("AACTA1040-20", "pretrain", "Diptera", "Cecidomyiidae", None, None, None),
    ("YGEN686-22", "pretrain", "Hymenoptera", None, None, None, None),
    ("YGEN2059-22", "pretrain", "Diptera", "Sciaridae", None, "Bradysia", None),
    ("AACTA1026-20", "train", "Diptera", "Sciaridae", None, "Bradysia", "Bradysia praecox"),
    ("YGEN986-22", "train", "Hymenoptera", "Braconidae", "Microgastrinae", "Apanteles", "Apanteles aidalopezae"),
    ("AACTA161-20", "val", "Diptera", "Sciaridae", None, "Bradysia", "Bradysia praecox"),
    ("AACTA1436-20", "test", "Hymenoptera", "Braconidae", "Microgastrinae", "Apanteles", "Apanteles aidalopezae"),
    ("YGEN995-22", "test", "Diptera", "Sciaridae", None, "Bradysia", "Bradysia praecox"),
    ("AACTA5263-20", "key_unseen", "Diptera", "Sciaridae", None, "Bradysia", "Bradysia sp. 3"),
    ("ABOTH8801-22", "val_unseen", "Diptera", "Sciaridae", None, "Bradysia", "Bradysia sp. 3"),
    ("BCMIN4148-23", "test_unseen", "Diptera", "Sciaridae", None, "Bradysia", "Bradysia sp. 3"),
    ("YDBB974-21", "test_unseen", "Hymenoptera", "Braconidae", "Microgastrinae", "Apanteles", "Apanteles malaise2"),
    ("ABSSI1639-22", "other_heldout", "Diptera", "Cecidomyiidae", None, "Cecidomyia", "Cecidomyia sp. 1AB"),
    ("YDBB6502-21", "other_heldout", "Hymenoptera", "Braconidae", None, "Apanteles", "Apanteles malaise7"),
]
CHUNK_CHARS = {"pretrain": 2, "train": 1, "other_heldout": 1}


def chunk_of(processid: str, split: str) -> str:
    return hashlib.md5(processid.encode()).hexdigest()[: CHUNK_CHARS.get(split, 0)]


def tiny_jpeg(seed: int, size: tuple[int, int] = (12, 8)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def bioscan5m_metadata(seed: int = 0) -> pd.DataFrame:
    """The 23-column metadata of the 14 specimens (text as str, empty = unknown)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (pid, split, order, family, subfamily, genus, species) in enumerate(_SPECIMENS):
        length = int(rng.integers(40, 70))
        barcode = "".join(rng.choice(list("ACGT"), size=length)) + "N" * (i % 3)
        taxon = species or genus or subfamily or family or order
        rows.append(
            {
                "processid": pid, "sampleid": f"BIOUG{1000 + i}-A{i:02d}", "taxon": taxon,
                "phylum": "Arthropoda", "class": "Insecta", "order": order, "family": family or "",
                "subfamily": subfamily or "", "genus": genus or "", "species": species or "",
                "dna_bin": f"BOLD:AA{i:05d}", "dna_barcode": barcode, "country": "Canada",
                "province_state": "Ontario", "coord-lat": 43.5 + i / 100, "coord-lon": -80.2,
                "image_measurement_value": 1000.0 + i, "area_fraction": 0.5, "scale_factor": 1.25,
                "inferred_ranks": i % 3, "split": split,
                "index_bioscan_1M_insect": str(100 + i) if i % 2 else "",
                "chunk": chunk_of(pid, split),
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=BIOSCAN5M_COLUMNS)


def make_bioscan5m_root(
    root: Path,
    metadata: Optional[pd.DataFrame] = None,
    image_package: str = "cropped_256",
    chunk_column: bool = True,
) -> pd.DataFrame:
    """Write ``<root>/bioscan5m/...`` (metadata CSV + one JPEG per row); return the metadata.

    ``chunk_column=False`` leaves the CSV's chunk column empty (readers must compute it).
    """
    meta = (bioscan5m_metadata() if metadata is None else metadata).copy()
    base = Path(root) / "bioscan5m"
    csv_path = base / "metadata" / "csv" / "BIOSCAN_5M_Insect_Dataset_metadata.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    written = meta if chunk_column else meta.assign(chunk="")
    written.to_csv(csv_path, index=False)
    for i, (pid, split) in enumerate(zip(meta["processid"], meta["split"])):
        path = base / "images" / image_package / split / chunk_of(pid, split) / f"{pid}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_jpeg(i))
    return meta


def image_path_5m(root: Path, processid: str, split: str, image_package: str = "cropped_256") -> Path:
    sub = chunk_of(processid, split)
    return Path(root) / "bioscan5m" / "images" / image_package / split / sub / f"{processid}.jpg"


# BIOSCAN-5M split -> the CLIBD partition of BIOSCAN-1M used for it in the 1M fixture.
CLIBD_1M_SPLITS = {
    "pretrain": "no_split", "train": "train_seen", "val": "val_seen", "test": "test_seen",
    "key_unseen": "test_unseen_keys", "val_unseen": "val_unseen", "test_unseen": "test_unseen",
    "other_heldout": "single_species",
}  # fmt: skip
BIOSCAN1M_COLUMNS = [
    "sampleid", "processid", "uri", "name", "phylum", "class", "order", "family", "subfamily", "tribe",
    "genus", "species", "subspecies", "nucraw", "image_file", "large_diptera_family", "chunk_number",
]  # fmt: skip


def make_bioscan1m_root(
    root: Path, metadata: Optional[pd.DataFrame] = None, image_package: str = "cropped_256"
) -> pd.DataFrame:
    """Write ``<root>/bioscan1m/`` (TSV with ``not_classified`` for unknown ranks, CLIBD
    partition files, images in ``part<chunk_number>``) from 5M-style metadata; return the TSV table."""
    meta = bioscan5m_metadata() if metadata is None else metadata
    base = Path(root) / "bioscan1m"
    rows = pd.DataFrame(
        {
            "sampleid": meta["sampleid"], "processid": meta["processid"], "uri": meta["dna_bin"],
            "name": meta["taxon"], "phylum": meta["phylum"], "class": meta["class"],
            **{r: meta[r].replace("", "not_classified") for r in ("order", "family", "subfamily", "genus", "species")},
            "tribe": "not_classified", "subspecies": "not_classified", "nucraw": meta["dna_barcode"],
            "image_file": meta["processid"] + ".jpg", "large_diptera_family": "train",
            "chunk_number": (np.arange(len(meta)) % 3 + 1).astype(str),
        }
    )[BIOSCAN1M_COLUMNS]  # fmt: skip
    base.mkdir(parents=True, exist_ok=True)
    rows.to_csv(base / "BIOSCAN_Insect_Dataset_metadata.tsv", sep="\t", index=False)
    parts = base / "CLIBD_partitioning"
    parts.mkdir(exist_ok=True)
    splits = meta["split"].map(CLIBD_1M_SPLITS)
    for name in sorted(set(CLIBD_1M_SPLITS.values())):
        (parts / f"{name}.txt").write_text("".join(s + "\n" for s in rows["sampleid"][splits == name]))
    for i, (image_file, chunk) in enumerate(zip(rows["image_file"], rows["chunk_number"])):
        path = base / "images" / image_package / f"part{chunk}" / image_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_jpeg(i))
    return rows
