"""The published CLIBD HDF5 files (BIOSCAN-1M and -5M): read into a specimen table, and write.

Layout, as checked in bioscan-ml/clibd (scripts/data_processing/generate_hdf5_file_5m.py for
5M, the BIOSCAN-1M conversion script's ``map_dict`` for 1M; readers in
bioscanclip/util/dataset.py): one group per (meta-)split, each holding
``image`` (uint8 [n, width]: JPEG bytes, zero-padded), ``image_mask`` (int: byte length,
0 = image missing), ``barcode``, ``order``/``family``/``genus``/``species`` (``not_classified``
where unknown), ``sampleid``, ``image_file``, ``processid`` (5M files only) and
``language_tokens_*`` (pre-tokenised text; ignored here). Strings are fixed-length bytes
or variable-length strings; both are read.

Groups overlap (``all_keys`` = ``seen_keys`` + ``unseen_keys``; ``no_split_and_seen_train`` =
pretrain + train), so a specimen appears once per group holding it. The table has one row
per specimen (id = ``processid``, else ``sampleid``) whose ``split`` is the smallest group
holding it (on a tie a non-union group). Nested groups then come back exactly as unions of
splits: for the 5M file, roles train = [no_split_and_seen_train, seen_keys] (the first
holds only pretrain rows after this rule), keys = [seen_keys, unseen_keys],
test_seen = [test_seen], test_unseen = [test_unseen], val_seen = [val_seen],
val_unseen = [val_unseen], unused = [other_heldout]. Groups that overlap without nesting
are an error. ``image_ref`` is ``h5://<file>#<group>/<row>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa

from clibd.config import SplitRoles
from clibd.data.images import H5_SCHEME, ImageReadError, read_image_bytes
from clibd.data.specimens import MISSING_RANK_WORD, normalise_table
from clibd.taxonomy import ALL_RANKS

# Published group -> the dataset splits it holds (generate_hdf5_file_5m.py ``map_dict``).
BIOSCAN5M_GROUPS: dict[str, list[str]] = {
    "all_keys": ["key_unseen", "train"],
    "val_seen": ["val"],
    "test_seen": ["test"],
    "seen_keys": ["train"],
    "test_unseen": ["test_unseen"],
    "val_unseen": ["val_unseen"],
    "unseen_keys": ["key_unseen"],
    "no_split_and_seen_train": ["pretrain", "train"],
    "other_heldout": ["other_heldout"],
}
# BIOSCAN-1M: groups over CLIBD's own 1M partitions (the partition names of bioscan1m.py).
BIOSCAN1M_GROUPS: dict[str, list[str]] = {
    "all_keys": ["test_unseen_keys", "val_unseen_keys", "seen_keys"],
    "no_split": ["no_split"],
    "no_split_and_seen_train": ["no_split", "train_seen"],
    "seen_keys": ["seen_keys"],
    "single_species": ["single_species"],
    "test_seen": ["test_seen"],
    "test_unseen": ["test_unseen"],
    "test_unseen_keys": ["test_unseen_keys"],
    "train_seen": ["train_seen"],
    "val_seen": ["val_seen"],
    "val_unseen": ["val_unseen"],
    "val_unseen_keys": ["val_unseen_keys"],
}
UNION_GROUPS = ("all_keys", "no_split_and_seen_train")
# Split roles over the published BIOSCAN-5M file's groups (see the module docstring).
BIOSCAN5M_HDF5_ROLES = SplitRoles(
    train=["no_split_and_seen_train", "seen_keys"],
    keys=["seen_keys", "unseen_keys"],
    test_seen=["test_seen"],
    test_unseen=["test_unseen"],
    val_seen=["val_seen"],
    val_unseen=["val_unseen"],
    unused=["other_heldout"],
)
ID_DATASETS = ("processid", "sampleid")
# Our column -> the dataset name in a group (``dna_bin`` is our addition; absent in published files).
DATASETS = {"dna_barcode": "barcode", "dna_bin": "dna_bin", "sampleid": "sampleid", **{r: r for r in ALL_RANKS}}
IMAGE_CHUNK = 8192  # most bytes per HDF5 chunk of an image row: one row is read without its neighbours


def _strings(values: np.ndarray) -> pd.Series:
    """HDF5 strings (fixed-length bytes, or variable-length bytes/str) -> pandas "string"."""
    arr = pa.array(values.tolist(), type=pa.binary() if values.dtype.kind == "S" else None)
    if pa.types.is_binary(arr.type):
        arr = arr.cast(pa.string())
    return pd.Series(arr.to_pandas(), dtype="string")


def _id_dataset(group: h5py.Group, path: Path) -> str:
    for name in ID_DATASETS:
        if name in group:
            return name
    raise ValueError(f"{path}: group {group.name!r} has no specimen id dataset (expected one of {list(ID_DATASETS)})")


def _assign_splits(members: pd.DataFrame, path: Path) -> pd.DataFrame:
    """members (id, group, row) -> one row per id: its smallest group and its row there."""
    size = members.groupby("group")["id"].transform("size")
    union = members["group"].isin(UNION_GROUPS)
    order = members.assign(_size=size, _union=union).sort_values(["_size", "_union", "group", "row"], kind="stable")
    home = order.drop_duplicates("id")[["id", "group"]].rename(columns={"group": "split"})
    # Nesting check: every group must hold all or none of each split's specimens.
    joined = members.drop_duplicates(["id", "group"]).merge(home, on="id")
    inside = joined.groupby(["split", "group"]).size()
    split_size = home.groupby("split").size()
    partial = inside[inside.to_numpy() != split_size.reindex(inside.index.get_level_values("split")).to_numpy()]
    if len(partial):
        split, group = partial.index[0]
        raise ValueError(
            f"{path}: groups {split!r} and {group!r} overlap without one containing the other; "
            "cannot give each specimen one split"
        )
    # Keep every row of an id's home group (repeats in one group stay: duplicate-id bad records).
    return members.merge(home, on="id").query("group == split")


def read_clibd_hdf5(path: str | Path) -> pd.DataFrame:
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"CLIBD HDF5 file not found: {path}")
    with h5py.File(path, "r") as f:
        groups = [name for name, item in f.items() if isinstance(item, h5py.Group)]
        if not groups:
            raise ValueError(f"{path}: no groups (expected one per split, e.g. {list(BIOSCAN5M_GROUPS)})")
        ids = {g: _strings(f[g][_id_dataset(f[g], path)][()]) for g in groups}
        members = pd.concat(
            [pd.DataFrame({"id": ids[g], "group": g, "row": np.arange(len(ids[g]))}) for g in groups], ignore_index=True
        )
        assigned = _assign_splits(members, path)
        parts = []
        for g, rows in assigned.groupby("group", sort=False)["row"]:
            grp, rows = f[g], np.sort(rows.to_numpy())
            if "barcode" not in grp:
                raise ValueError(f"{path}: group {g!r} has no 'barcode' dataset")
            part = {"processid": ids[g].iloc[rows].reset_index(drop=True), "split": g}
            for column, name in DATASETS.items():
                if name in grp:
                    part[column] = _strings(grp[name][()][rows])
            ref = pd.Series(f"{H5_SCHEME}{path}#{g}/" + pd.Series(rows).astype(str), dtype="string")
            if "image" in grp and "image_mask" in grp:
                part["image_ref"] = ref.mask(grp["image_mask"][()][rows] <= 0)
            parts.append(pd.DataFrame(part))
    if not parts:
        raise ValueError(f"{path}: every group is empty")
    return normalise_table(pd.concat(parts, ignore_index=True))


def _fixed_bytes(values: pd.Series, missing: str) -> np.ndarray:
    encoded = values.astype("string").fillna(missing).str.encode("utf-8")
    return np.array(encoded.tolist(), dtype="S") if len(encoded) else np.zeros(0, dtype="S1")


def write_clibd_hdf5(
    table: pd.DataFrame,
    path: str | Path,
    image_bytes_fn: Callable[[str], bytes] = read_image_bytes,
    groups: Mapping[str, Sequence[str]] = BIOSCAN5M_GROUPS,
    block: int = 256,
) -> dict[str, object]:
    """Write ``table`` in the published layout, one group per entry of ``groups`` (group ->
    splits it holds). Images come from ``image_bytes_fn(image_ref)``; one that cannot be read
    is stored as ``image_mask`` 0 (as the published conversion did) and reported.
    Returns ``{"groups": {name: rows}, "missing_images": [processid, ...]}``."""
    missing: list[str] = []
    sizes: dict[str, int] = {}
    with h5py.File(path, "w") as f:
        for name, splits in groups.items():
            rows = table[table["split"].isin(list(splits)).to_numpy(dtype=bool)].reset_index(drop=True)
            g = f.create_group(name)
            sizes[name] = n = len(rows)
            g.create_dataset("processid", data=_fixed_bytes(rows["processid"], ""))
            if "sampleid" in rows:
                g.create_dataset("sampleid", data=_fixed_bytes(rows["sampleid"], ""))
            g.create_dataset("barcode", data=_fixed_bytes(rows["dna_barcode"], ""))
            g.create_dataset("dna_bin", data=_fixed_bytes(rows["dna_bin"], ""))
            g.create_dataset("image_file", data=_fixed_bytes(rows["processid"] + ".jpg", ""))
            for rank in ALL_RANKS:  # variable-length strings, as the published files store ranks
                names = rows[rank].astype("string").fillna(MISSING_RANK_WORD).to_numpy(dtype=object)
                g.create_dataset(rank, data=names, dtype=h5py.string_dtype())
            image = None
            lengths = np.zeros(n, dtype=np.int64)
            refs, ids = rows["image_ref"].tolist(), rows["processid"].tolist()
            for start in range(0, n, block):
                stop = min(start + block, n)
                blobs = []
                for ref, pid in zip(refs[start:stop], ids[start:stop]):
                    try:
                        blobs.append(b"" if pd.isna(ref) else image_bytes_fn(ref))
                    except ImageReadError:
                        blobs.append(b"")
                    if not blobs[-1]:
                        missing.append(str(pid))
                lengths[start:stop] = [len(b) for b in blobs]
                width = int(lengths[start:stop].max(initial=0))
                if image is None:  # one row per chunk, as wide as the first images (<= IMAGE_CHUNK)
                    chunk = (1, min(IMAGE_CHUNK, max(width, 1)))
                    image = g.create_dataset("image", shape=(n, 0), maxshape=(n, None), dtype="uint8", chunks=chunk)
                if width > image.shape[1]:
                    image.resize(width, axis=1)
                buf = np.zeros((stop - start, image.shape[1]), dtype=np.uint8)
                for j, blob in enumerate(blobs):
                    buf[j, : len(blob)] = np.frombuffer(blob, dtype=np.uint8)
                image[start:stop] = buf
            if image is None:
                g.create_dataset("image", shape=(0, 0), dtype="uint8")
            g.create_dataset("image_mask", data=lengths)
    return {"groups": sizes, "missing_images": missing}
