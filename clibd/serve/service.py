"""The classifier behind ``clibd serve``: model and library loaded once, uploads -> the JSON
the page shows (per specimen: predictions, the threshold, the k nearest keys) and the CSV of
``clibd classify``. Thumbnails come only from the ``image_ref`` the library stores for its
keys, looked up by key id: nothing in a request is ever used as a path."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
from PIL import Image

from clibd.config import SPECIMEN_MODALITIES, QualityConfig, load_config
from clibd.data.images import ImageReadError, read_image_bytes
from clibd.data.transforms import ImageDecodeError, decode_image
from clibd.embed.embedder import Embedder
from clibd.embed.inputs import embed_decoded
from clibd.embed.run_dir import find_run_config
from clibd.index.classify_specimens import FILE_COLUMNS, SpecimenSearch, search_specimens
from clibd.index.identity import Rerank
from clibd.index.library import load_key_dna, load_library
from clibd.serve.uploads import Upload, decode_photos, read_barcode_uploads, specimen_id
from clibd.taxonomy import EVAL_RANKS

THUMBNAIL_SIDE = 128
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    file_bytes: int = 16 * MiB  # one photo or barcode file
    request_bytes: int = 256 * MiB  # one POST /api/classify
    files: int = 1000  # parts in one request


class Classifier:
    """``Classifier(checkpoint, index_dir)``: load once, then ``classify(photos, barcodes)`` per request."""

    def __init__(
        self,
        checkpoint: str | Path,
        index_dir: str | Path,
        k: int = 5,
        device: str = "auto",
        batch_size: int = 64,
        precision: str = "auto",
        rules: Optional[QualityConfig] = None,
        keep_flagged: bool = False,
        rerank: Optional[Callable[[pd.Series], Optional[Rerank]]] = None,
    ) -> None:
        """``rules`` / ``keep_flagged``: the quality checks, as ``clibd classify``'s options; ``rerank``:
        the re-rank by % identity of ``--rerank identity``, made from the library's key species."""
        started = time.perf_counter()
        self.checkpoint, self.index_dir, self.k = Path(checkpoint), Path(index_dir), k
        self.rules, self.keep_flagged = QualityConfig() if rules is None else rules, keep_flagged
        # Photos and barcodes (the text tower is never loaded); the image tower loads in the background:
        # barcodes and /api/health are answered while its libraries import, photos wait for it.
        self.embedder = Embedder(
            checkpoint, device, batch_size, precision, modalities=SPECIMEN_MODALITIES, background=("image",)
        )
        self.library = load_library(index_dir, self.embedder)
        self.dna = load_key_dna(index_dir, self.library)  # key barcodes (memory-mapped) and the strand model
        self.rerank = None if rerank is None else rerank(self.library.taxonomy["species"])
        # Each key's photo, by position (Arrow strings; a key id is found by the library's binary search):
        # no Python object per key, so a library of millions starts in seconds (docs/scale.md).
        taxonomy = self.library.taxonomy
        self._image_refs = taxonomy["image_ref"] if "image_ref" in taxonomy else pd.Series(pd.NA, index=taxonomy.index)
        self._keys_with_photo = int(self._image_refs.notna().sum())
        self._lock = threading.Lock()  # one inference at a time: the model's threads are the parallelism
        self._provenance = provenance(self.checkpoint, self.library.metadata)
        self.load_seconds = time.perf_counter() - started

    def health(self) -> dict[str, Any]:
        meta = self.library.metadata
        return {
            "model": str(self.checkpoint),
            "checkpoint_hash": self.embedder.checkpoint_hash,
            "index": str(self.index_dir),
            "index_checkpoint_hash": self.library.checkpoint_hash,
            "index_modality": meta.get("modality"),
            "keys": len(self.library),
            "keys_with_photo": self._keys_with_photo,
            "dim": self.embedder.dim,
            "k": self.k,
            "thresholds": {m: t["threshold"] for m, t in meta["thresholds"].items()},
            "identity_thresholds": {m: t["threshold"] for m, t in meta.get("identity_thresholds", {}).items()},
            "rerank": None
            if self.rerank is None
            else {"candidates": self.rerank.candidates, "margin": self.rerank.margin},
            "provenance": meta.get("provenance"),
            "calibration": meta.get("calibration"),
            "device": str(self.embedder.device),
            "load_seconds": round(self.load_seconds, 3),
            "loading": list(self.embedder.loading),  # towers not ready yet (requests needing them wait)
            **self._provenance,
        }

    def classify(self, photos: list[Upload], barcode_files: list[Upload], limits: Limits) -> dict[str, Any]:
        """The JSON answer: ``specimens`` (one per row, in upload order), ``csv``, ``counts``.

        Rows are ``clibd classify``'s (``clibd.index.classify_specimens``), one for every input: a photo
        and a barcode with one id are one specimen and one fused prediction; a file or record that
        cannot be read has its row, its ``quality`` saying why; a modality counts as given when any of
        its files was uploaded. Raises ValueError on duplicate ids within photos or within barcodes."""
        started = time.perf_counter()
        images = decode_photos(photos, self.embedder.photo_decode_side(self.rules), limits.file_bytes)
        barcodes = read_barcode_uploads(barcode_files, limits.file_bytes)
        with self._lock:
            orient = self.dna.strand.orient if self.dna.strand is not None else None
            inputs = embed_decoded(
                self.embedder, images if photos else None, barcodes if barcode_files else None, self.rules, orient
            )
            result = search_specimens(self.library, inputs, self.k, self.keep_flagged, self.dna.barcodes, self.rerank)
        photo_files = {specimen_id(upload.name): upload.name for upload in photos}
        return {
            "specimens": self._specimens(result, photo_files),
            "csv": result.table.to_csv(index=False, float_format="%.4f"),
            "counts": {
                "photos": len(images),
                "barcodes": len(barcodes),
                "rows": len(result.table),
                "withheld": int((result.table["evidence"] == "").sum()),
                "errors": int(sum(given.unreadable.sum() for given in inputs.values())),
            },
            "seconds": round(time.perf_counter() - started, 4),
        }

    def _specimens(self, result: SpecimenSearch, photo_files: dict[str, str]) -> list[dict]:
        neighbours = self._neighbours(result)
        specimens = []
        scores = np.where(result.reranked, "identity", "similarity")
        for record, threshold, near, score in zip(_records(result.table), result.thresholds, neighbours, scores):
            evidence, quality = record.pop("evidence"), record.pop("quality")
            files = {column: record.pop(column) for column in FILE_COLUMNS}
            sid = record.pop("id")
            result_row = {
                "evidence": evidence,
                "quality": quality,
                "files": files,
                "prediction": record,
                "threshold": None if np.isnan(threshold) else float(threshold),
                "threshold_on": str(score),  # the score the new-species threshold is compared with
                "neighbours": near,
            }
            specimens.append({"id": sid, "photo": photo_files.get(sid), "results": [result_row]})
        return specimens

    def _neighbours(self, result: SpecimenSearch) -> list[list[dict]]:
        """Per row, its k nearest keys (id, similarity, four ranks, thumbnail URL), nearest first; none where
        the row's prediction was withheld."""
        valid = result.positions >= 0
        positions = result.positions[valid]
        keys = pd.DataFrame(
            {
                "id": self.library.ids[positions].astype(object),  # only the k rows: ids are a StringDType array
                "similarity": result.scores[valid].astype(np.float64),
                "identity": result.identity[valid],
            }
        )
        taxonomy = self.library.taxonomy[list(EVAL_RANKS)].iloc[positions].reset_index(drop=True)
        flat = _records(pd.concat([keys, taxonomy], axis=1))
        for key, has_photo in zip(flat, self._image_refs.iloc[positions].notna().to_numpy(bool)):
            key["thumbnail"] = f"/api/thumbnail/{key['id']}" if has_photo else None
        bounds = np.concatenate([[0], np.cumsum(valid.sum(axis=1))])
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def thumbnail(self, key: str) -> Optional[bytes]:
        """A key's photo as a small JPEG, or None when the library has no photo for that key id."""
        position = self.library.positions([key])[0]
        ref = self._image_refs.iat[position] if position >= 0 else None
        return None if pd.isna(ref) else _thumbnail(ref)


def provenance(checkpoint: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """What the page says about where its answers come from: the library's build (dataset, key splits,
    checkpoint; a library built from a table has its ``provenance`` in the health answer itself), the
    data the model was trained on, and whether that was the synthetic demo data
    (``data.demo_specimens`` of the run's config.yaml: the demo generator made it)."""
    found = find_run_config(checkpoint)
    data = load_config(found).data if found is not None else None
    return {
        "library": {key: metadata.get(key) for key in ("dataset", "key_splits", "checkpoint")},
        "trained_on": f"{data.format}:{data.root}" if data is not None else None,
        "synthetic_demo": bool(data is not None and data.demo_specimens > 0),
    }


@lru_cache(maxsize=4096)
def _thumbnail(ref: str) -> Optional[bytes]:
    try:
        image = decode_image(read_image_bytes(ref), ref, THUMBNAIL_SIDE)
    except (ImageReadError, ImageDecodeError, OSError):
        return None
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts, column-wise: floats rounded to 4 places (as the CSV), NaN / <NA> -> None."""
    columns = {}
    for name in table.columns:
        column = table[name]
        if pd.api.types.is_float_dtype(column):
            column = column.round(4)
        columns[name] = column.astype(object).where(column.notna(), None).tolist()
    return [dict(zip(columns, values)) for values in zip(*columns.values())]
