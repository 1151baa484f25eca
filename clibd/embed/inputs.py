"""New specimens, quality-checked and embedded a bounded chunk at a time: photo files and
folders and barcode files from the command line (:func:`specimen_chunks`), or the same already
in memory (a server's uploads: :func:`embed_decoded`). Reading is ``clibd.embed.records``'.

Every input record becomes one row of ``records`` (``RECORD_COLUMNS``): ``id``, ``file``,
``record`` (1-based record number in its file; 1 for a photo; none for a barcode file that
could not be read) and ``quality``: ``""`` when it passed, else why it was not used, in words:
the checks of ``clibd.data.quality`` (``too_short (...)``, ``blurry``, ...), ``unreadable
(...)`` for an input that could not be read or decoded, ``not_finite (...)`` when the model
gave no usable embedding (damaged weights). Its embedding row is NaN unless it was embedded.
Barcodes also keep ``sequence`` and ``strand``: given an ``orient`` function (a library's
``clibd.index.strand.StrandModel.orient``), each barcode that passed is put on the library's
strand before it is embedded (``strand`` ``+`` as given, ``-`` reverse-complemented; ``<NA>``
otherwise), and ``sequence`` is the read as embedded (the % identity of its hits is taken on it).

Duplicate ids within one modality's inputs are an error naming them and their records (the
id is how a photo meets its barcode and how an output row is traced back, so it must say
which specimen it is), found across the whole stream (:class:`SeenIds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from clibd.config import QualityConfig
from clibd.data.quality import barcode_quality
from clibd.embed.embedder import Embedder, image_id
from clibd.embed.records import CHUNK_RECORDS, iter_barcode_records, photo_files

RECORD_COLUMNS = ["id", "file", "record", "quality"]
ORIENTED_COLUMNS = [*RECORD_COLUMNS, "sequence", "strand"]  # a barcode's rows (module docstring)
NOT_FINITE = "not_finite (the model gave no finite embedding: its weights may be damaged)"


Orient = Callable[[list[str]], tuple[list[str], np.ndarray]]  # reads -> (on the library's strand, "+"/"-" each)


def unreadable(problem: object) -> str:
    return f"unreadable ({problem})"


@dataclass
class EmbeddedInputs:
    """One modality's inputs: ``records`` (one row per input record, input order, columns
    ``RECORD_COLUMNS``) and ``embeddings`` ``[len(records), D]`` (NaN rows: not embedded)."""

    modality: str
    records: pd.DataFrame
    embeddings: np.ndarray

    @property
    def unreadable(self) -> np.ndarray:
        """Which records could not be read or decoded."""
        return self.records["quality"].str.startswith("unreadable").to_numpy(bool)

    def take(self, rows: np.ndarray) -> EmbeddedInputs:
        return EmbeddedInputs(self.modality, self.records.iloc[rows].reset_index(drop=True), self.embeddings[rows])

    @staticmethod
    def concat(parts: Sequence[EmbeddedInputs], modality: str, dim: int) -> EmbeddedInputs:
        if not parts:
            empty = pd.DataFrame({c: pd.Series([], dtype="string") for c in RECORD_COLUMNS})
            return EmbeddedInputs(modality, empty.astype({"record": "Int64"}), np.zeros((0, dim), np.float32))
        records = pd.concat([p.records for p in parts], ignore_index=True)
        return EmbeddedInputs(modality, records, np.concatenate([p.embeddings for p in parts]))


class SeenIds:
    """The ids met so far in one modality's inputs, as 64-bit hashes with the place each came from
    (about 20 bytes an id, so a million barcodes stay small); :meth:`check` refuses a chunk holding an
    id met before, in it or in an earlier chunk, naming up to 10 and their ``file:record`` places."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.files: list[str] = []
        self._sorted = (np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.int64))
        self._recent: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def check(self, records: pd.DataFrame) -> None:
        ids = records["id"].astype(str).to_numpy(object)
        hashes = pd.util.hash_array(ids)
        file_codes, files = pd.factorize(records["file"].astype(str))
        file_index = np.array([self._file(f) for f in files], np.int32)[file_codes]
        numbers = records["record"].astype("Int64").fillna(0).to_numpy(np.int64)
        places = {}
        for key, file, record in zip(*self._earlier(hashes, ids)):
            places.setdefault(key, []).append(f"{self.files[file]}:{record}")
        again = pd.Series(ids).duplicated(keep=False).to_numpy() | np.isin(ids, list(places))
        for key, file, record in zip(ids[again], file_index[again], numbers[again]):
            places.setdefault(key, []).append(f"{self.files[file]}:{record}")
        if places:
            listed = "; ".join(f"{key!r} ({', '.join(where)})" for key, where in list(places.items())[:10])
            raise ValueError(
                f"{len(places)} duplicate {self.what} ids, each must name one specimen: {listed}"
                + (" ..." if len(places) > 10 else "")
            )
        self._recent.append((hashes, file_index, numbers))
        if sum(len(h) for h, _, _ in self._recent) > max(len(self._sorted[0]) // 4, 1 << 16):
            self._merge()

    def _file(self, name: str) -> int:
        if not self.files or self.files[-1] != name:
            self.files.append(name)
        return len(self.files) - 1

    def _merge(self) -> None:
        """Fold the recent chunks into the sorted arrays (amortised: each id is moved O(log n) times)."""
        parts = [self._sorted, *self._recent]
        merged = [np.concatenate([p[j] for p in parts]) for j in range(3)]
        order = np.argsort(merged[0], kind="stable")
        self._sorted, self._recent = tuple(a[order] for a in merged), []

    def _earlier(self, hashes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(id, file index, record)`` of every earlier input whose id hash a chunk's id has."""
        if len(self._recent) > 8:
            self._merge()
        found = []
        for keys, files, records in [self._sorted, *self._recent]:
            order = np.argsort(keys, kind="stable") if keys is not self._sorted[0] else None
            ordered = keys if order is None else keys[order]
            at = np.searchsorted(ordered, hashes)
            hit = np.flatnonzero(at < len(ordered))
            hit = hit[ordered[at[hit]] == hashes[hit]]
            rows = at[hit] if order is None else order[at[hit]]
            found.append((ids[hit], files[rows], records[rows]))
        return tuple(np.concatenate([f[j] for f in found]) for j in range(3))


def embed_barcode_records(
    embedder: Embedder, records: pd.DataFrame, rules: QualityConfig, orient: Optional[Orient] = None
) -> EmbeddedInputs:
    """Check (``clibd.data.quality.barcode_quality``), orient (``orient``, module docstring) and embed
    the barcodes that pass; ``records``: ``clibd.embed.records.BARCODE_COLUMNS`` (a ``problem`` makes
    the record unreadable)."""
    problem = records["problem"] if "problem" in records else pd.Series(pd.NA, index=records.index)
    quality = pd.Series(barcode_quality(records["sequence"].tolist(), rules), index=records.index, dtype="string")
    quality = quality.mask(problem.notna(), "unreadable (" + problem.astype("string") + ")")
    embeddings = np.full((len(records), embedder.dim), np.nan, dtype=np.float32)
    passed = (quality == "").to_numpy(bool)
    records = records.assign(strand=pd.NA).astype({"sequence": "string", "strand": "string"})
    if passed.any():
        if orient is not None:
            oriented, strand = orient(records.loc[passed, "sequence"].tolist())
            records.loc[passed, "sequence"], records.loc[passed, "strand"] = oriented, strand
        embeddings[passed], _ = embedder.embed_dna(records.loc[passed, "sequence"].tolist())
    quality = quality.mask(passed & ~np.isfinite(embeddings).all(axis=1), NOT_FINITE)
    table = records.assign(quality=quality, record=records["record"].astype("Int64"))
    return EmbeddedInputs("dna", table[ORIENTED_COLUMNS].reset_index(drop=True), embeddings)


def embed_photo_items(
    embedder: Embedder,
    items: Sequence[str | Path | Image.Image | None],
    records: pd.DataFrame,
    rules: QualityConfig,
    problems: Optional[Sequence[Optional[str]]] = None,
) -> EmbeddedInputs:
    """Decode (files), check (``clibd.data.quality.photo_quality``) and embed photos given as files or
    as decoded images; ``records`` (``id``, ``file``, ``record``) describe ``items`` one for one;
    ``problems``: why an item could not be read before it got here (None where it was)."""
    problems = list(problems) if problems is not None else [None] * len(items)
    ready = [i for i, problem in enumerate(problems) if problem is None]
    result = embedder.embed_photos([items[i] for i in ready], rules, bar=False)  # the caller's bar counts chunks
    embeddings = np.full((len(items), embedder.dim), np.nan, dtype=np.float32)
    embeddings[ready] = result.embeddings
    quality = [unreadable(problem) if problem else "" for problem in problems]
    for i, flag, problem, row in zip(ready, result.quality, result.problems, result.embeddings):
        quality[i] = unreadable(problem) if problem else (NOT_FINITE if np.isnan(row).any() else flag)
    table = records.assign(quality=pd.array(quality, dtype="string"), record=records["record"].astype("Int64"))
    return EmbeddedInputs("image", table[RECORD_COLUMNS].reset_index(drop=True), embeddings)


def photo_records(files: Sequence[Path]) -> pd.DataFrame:
    """``id`` (the file name without its extension), ``file``, ``record`` (1) of photo files."""
    ids = [image_id(p, i) for i, p in enumerate(files)]
    return pd.DataFrame({"id": pd.array(ids, "string"), "file": list(map(str, files)), "record": 1})


def specimen_chunks(
    embedder: Embedder,
    images: Optional[Sequence[str]] = None,
    dna: Optional[Sequence[str]] = None,
    rules: Optional[QualityConfig] = None,
    chunk: int = CHUNK_RECORDS,
    orient: Optional[Orient] = None,
) -> Iterator[dict[str, EmbeddedInputs]]:
    """The inputs a chunk at a time, ``{"image": ..., "dna": ...}`` for the modalities given (a chunk
    of specimens: ``clibd.index.classify_specimens`` makes its rows). Memory is bounded by the chunk.

    With photos and barcodes, photos come first, each chunk with the barcodes of its ids (a first
    pass over the barcode files embeds those, and checks every id), then the barcodes without a
    photo (a second pass); chunks carry an empty modality so that rows read alike."""
    if images is None and dna is None:
        raise ValueError("give image files / folders, DNA barcode files, or both")
    rules = QualityConfig() if rules is None else rules
    files = photo_files(images)[0] if images is not None else []
    photos = photo_records(files)
    SeenIds("photo (file name without extension)").check(photos)

    def photo_chunk(rows: slice) -> EmbeddedInputs:
        return embed_photo_items(embedder, files[rows], photos.iloc[rows], rules)

    if dna is None:
        for start in range(0, len(files), chunk):
            yield {"image": photo_chunk(slice(start, start + chunk))}
        return
    seen = SeenIds("barcode")
    if images is None:
        for records in iter_barcode_records(dna, chunk):
            seen.check(records)
            yield {"dna": embed_barcode_records(embedder, records, rules, orient)}
        return
    photo_ids = pd.Index(photos["id"])
    paired = []
    for records in iter_barcode_records(dna, chunk):
        seen.check(records)
        mine = records[records["id"].isin(photo_ids)]
        if len(mine):
            paired.append(embed_barcode_records(embedder, mine, rules, orient))
    barcodes = EmbeddedInputs.concat(paired, "dna", embedder.dim)
    at = pd.Index(barcodes.records["id"])
    for start in range(0, len(files), chunk):
        rows = slice(start, start + chunk)
        found = at.get_indexer(photos["id"].iloc[rows])
        yield {"image": photo_chunk(rows), "dna": barcodes.take(found[found >= 0])}
    no_photos = EmbeddedInputs.concat([], "image", embedder.dim)
    for records in iter_barcode_records(dna, chunk):
        rest = records[~records["id"].isin(photo_ids)]
        if len(rest):
            yield {
                "image": no_photos,
                "dna": embed_barcode_records(embedder, rest.reset_index(drop=True), rules, orient),
            }


def embed_decoded(
    embedder: Embedder,
    photos: Optional[pd.DataFrame] = None,
    barcodes: Optional[pd.DataFrame] = None,
    rules: Optional[QualityConfig] = None,
    orient: Optional[Orient] = None,
) -> dict[str, EmbeddedInputs]:
    """:func:`specimen_chunks` for inputs already in memory, as one chunk (a server's uploads: nothing
    touches disk). ``photos``: ``id``, ``file``, ``record``, ``image`` (PIL, None where it could not
    be decoded), ``problem`` (why); ``barcodes``: ``clibd.embed.records.BARCODE_COLUMNS``; None: that
    modality was not given."""
    if photos is None and barcodes is None:
        raise ValueError("give photos, DNA barcodes, or both")
    rules = QualityConfig() if rules is None else rules
    out = {}
    if photos is not None:
        SeenIds("photo (file name without extension)").check(photos)
        problems = photos["problem"].astype(object).where(photos["problem"].notna(), None).tolist()
        out["image"] = embed_photo_items(embedder, photos["image"].tolist(), photos, rules, problems)
    if barcodes is not None:
        SeenIds("barcode").check(barcodes)
        out["dna"] = embed_barcode_records(embedder, barcodes, rules, orient)
    return out
