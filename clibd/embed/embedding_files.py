"""The files ``clibd embed`` writes, a chunk at a time and whole or not at all.

- ``FILE.parquet``: one row per input record: ``id``, ``file``, ``record``, ``quality`` and
  ``embedding`` (fixed-size list of float32; null where the input was not embedded or was
  left out, ``quality`` says why). Written under a temporary name, renamed over ``FILE`` at
  the end; its schema metadata ``clibd`` names the command and the checkpoint hash.
- ``FILE.npy``: the ``[N, D]`` float32 array of the embedded rows only, their ids one per
  line in ``FILE.ids.txt``, and ``FILE.manifest.json`` (``clibd.atomic``: both files'
  checksums and the checkpoint hash). The manifest is removed first, the two files are
  renamed into place, the manifest written last: :func:`read_embeddings` refuses a pair
  left mixed by a kill between the renames.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clibd.atomic import fsync_path, verify_manifest, write_manifest

SUFFIXES = (".parquet", ".npy")
KIND = "clibd embed"
METADATA_KEY = b"clibd"


def ids_file(path: Path) -> Path:
    return path.with_suffix(".ids.txt")


def manifest_name(path: Path) -> str:
    return f"{path.stem}.manifest.json"


def is_embed_output(path: Path) -> bool:
    """Whether ``path`` is an earlier output of ``clibd embed`` (safe to replace)."""
    if path.suffix == ".npy":
        return ids_file(path).is_file() or (path.parent / manifest_name(path)).is_file()
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return False
    return METADATA_KEY in metadata


class EmbeddingWriter:
    """``with EmbeddingWriter(path, dim, checkpoint_hash) as out: out.write(records, embeddings, keep)``;
    on a clean exit the file(s) replace ``path``, on an exception nothing does."""

    def __init__(self, path: str | os.PathLike, dim: int, checkpoint_hash: Optional[str]) -> None:
        self.path, self.dim, self.checkpoint_hash = Path(path), dim, checkpoint_hash
        if self.path.suffix not in SUFFIXES:
            raise ValueError(f"--out must end in .parquet or .npy, got {self.path}")
        self.rows = 0
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._tmp_ids = self.path.with_name(f".{ids_file(self.path).name}.tmp")

    def __enter__(self) -> "EmbeddingWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix == ".parquet":
            meta = json.dumps({"command": KIND, "checkpoint_hash": self.checkpoint_hash}).encode()
            self._schema = pa.schema(
                [
                    ("id", pa.string()),
                    ("file", pa.string()),
                    ("record", pa.int64()),
                    ("quality", pa.string()),
                    ("embedding", pa.list_(pa.float32(), self.dim)),
                ],
                metadata={METADATA_KEY: meta},
            )
            self._parquet = pq.ParquetWriter(self._tmp, self._schema)
        else:  # the rows first, the .npy header (it holds the row count) when they are all written
            self._data = self._tmp.with_suffix(".data").open("wb")
            self._ids = self._tmp_ids.open("w")
        return self

    def write(self, records: pd.DataFrame, embeddings: np.ndarray, keep: np.ndarray) -> None:
        """One chunk: ``records`` (``id``, ``file``, ``record``, ``quality``), their ``embeddings`` and which
        of them to keep (parquet: the others get a null embedding; npy: they are left out)."""
        if self.path.suffix == ".parquet":
            flat = pa.array(np.nan_to_num(embeddings, nan=0.0).astype(np.float32).ravel())
            columns = [
                pa.array(records["id"].astype(str).tolist(), pa.string()),
                pa.array(records["file"].astype(str).tolist(), pa.string()),
                pa.array(records["record"].astype("Int64").to_numpy(dtype=object, na_value=None), pa.int64()),
                pa.array(records["quality"].astype(str).tolist(), pa.string()),
                pa.FixedSizeListArray.from_arrays(flat, self.dim, mask=pa.array(~keep)),
            ]
            self._parquet.write_batch(pa.record_batch(columns, schema=self._schema))
            self.rows += len(records)
        else:
            self._data.write(np.ascontiguousarray(embeddings[keep], dtype=np.float32).tobytes())
            self._ids.write("".join(f"{i}\n" for i in records["id"][keep].astype(str)))
            self.rows += int(keep.sum())

    def __exit__(self, kind, value, traceback) -> None:
        data = self._tmp.with_suffix(".data")
        try:
            if self.path.suffix == ".parquet":
                self._parquet.close()
            else:
                self._data.close()
                self._ids.close()
            if kind is None:
                self._commit(data)
        finally:
            for leftover in (self._tmp, self._tmp_ids, data):
                leftover.unlink(missing_ok=True)

    def _commit(self, data: Path) -> None:
        if self.path.suffix == ".npy":
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
            with self._tmp.open("wb") as out, data.open("rb") as rows:
                np.lib.format.write_array_header_1_0(out, {**header, "shape": (self.rows, self.dim)})
                shutil.copyfileobj(rows, out, 1 << 24)
            manifest = self.path.parent / manifest_name(self.path)
            manifest.unlink(missing_ok=True)  # until the new one is written, the pair reads as unfinished
            fsync_path(self._tmp_ids)
            os.replace(self._tmp_ids, ids_file(self.path))
        fsync_path(self._tmp)
        os.replace(self._tmp, self.path)
        fsync_path(self.path.parent)
        if self.path.suffix == ".npy":
            names = [self.path.name, ids_file(self.path).name]
            write_manifest(self.path.parent, KIND, names, self.checkpoint_hash, name=manifest_name(self.path))


def read_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """``(embeddings [N, D], ids)`` of a ``clibd embed`` ``.npy`` output, its manifest checked."""
    path = Path(path)
    verify_manifest(path.parent, KIND, "clibd embed output", name=manifest_name(path))
    return np.load(path), ids_file(path).read_text().splitlines()
