"""``ReferenceIndex``: cosine nearest-key search over FAISS, with the keys' ids and taxonomy.

Vectors are L2-normalised float32 (a copy; the caller's arrays are never changed), so
inner product is cosine similarity. Kinds:

- ``flat``: exact ``IndexFlatIP`` (the default, and what the published evaluation used);
- ``ivf``: ``IVF{nlist},Flat``, trained on the first ``add`` batch; ``nlist`` defaults to
  ``2*sqrt(N)`` (at most ``N/39``, FAISS's minimum of training points per list);
  ``nprobe`` lists are visited per query;
- ``ivfpq``: for libraries of millions of keys (CPU only), two stages, all FAISS
  (``IndexRefineFlat``): ``IVF{nlist},PQ{pq_m}x4fs`` (``nlist`` as ``ivf``'s, at most
  ``IVFPQ_MAX_LISTS``; fast-scan product quantizer: ``pq_m`` codes of 4 bits, ``pq_m/2`` bytes
  per key; ``pq_m`` defaults to ``dim/2``, 192 bytes for 768-d keys) finds ``k_factor * k``
  candidates in RAM, and the exact inner product with the full vectors re-ranks them. ``load``
  memory-maps the full vectors from ``index.faiss``
  (``IO_FLAG_MMAP_IFC``), so RAM holds the codes, ids and lists (~216 bytes per 768-d key:
  a 5 M-key library in ~1.1 GB) and the re-rank reads ``k_factor * k`` rows from disk or the
  page cache per query. At 768-d no code that fits 2 GB for 5 M keys (<= ~380 bytes) reached
  recall@1 0.95 alone on the benchmark's keys (4-bit scalar codes 0.69, 6-bit 0.91, 8-bit
  0.97; docs/scale.md); the re-rank restores the exact order of the candidates;
- ``hnsw``: ``HNSW32,Flat`` with ``ef_search`` (CPU only: FAISS has no GPU HNSW);
- ``auto``: picks one of these by the number of keys (``auto_kind``; docs/scale.md, "Which kind"),
  from the first ``add``'s batch or ``reserve(count)``.

IVF kinds train on at most ``TRAIN_PER_LIST * nlist`` keys of the first batch, drawn with a
fixed seed, for ``KMEANS_ITERATIONS`` k-means iterations: FAISS's defaults (256 per list, 25
iterations) are 10x the k-means work; with these, both IVF kinds had recall@1 1.000 against
exact at 1 M x 768 (docs/scale.md).

``device="auto"`` uses every GPU FAISS sees (``index_cpu_to_all_gpus``, sharded) and the
CPU otherwise (``ivfpq`` and ``hnsw`` always run on the CPU); ``device="cuda"`` without a GPU
build of FAISS is an error.

Search results are sorted by similarity, ties broken by key position (the key added
first comes first), so results do not depend on FAISS's heap order.

Keys (``clibd.index.keys``): ids as a numpy ``StringDType`` array with their sorted order
(``positions`` finds ids by binary search), taxonomy ranks as categoricals: no Python object
per key, so a library of millions loads in seconds.

On disk (``save``): ``index.faiss`` (the CPU index), ``keys.parquet`` (``id`` + taxonomy
columns, ranks dictionary-encoded), ``id_order.npy`` (the ids' sorted order, memory-mapped on
load; computed when absent), ``meta.json`` (dim, kind, parameters, ``checkpoint_hash`` and the
free ``metadata`` dict, e.g. a calibrated new-species threshold), and last ``manifest.json``
(``clibd.atomic``: each file's checksum), which ``load`` checks: a folder whose files come from
different saves, or a save cut short, is refused naming the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import faiss
import numpy as np
import pandas as pd

from clibd.atomic import MANIFEST, verify_manifest, write_manifest
from clibd.index.keys import KeyIds, as_strings, compact_taxonomy, join_taxonomy

KINDS = ("flat", "ivf", "ivfpq", "hnsw")
AUTO = "auto"
IVF_KINDS = ("ivf", "ivfpq")
CPU_KINDS = ("ivfpq", "hnsw")  # FAISS has no GPU HNSW, fast-scan PQ or refine stage
TRAIN_PER_LIST = 64
KMEANS_ITERATIONS = 10
K_FACTOR = 32  # ivfpq re-ranks k_factor * k candidates: recall@32 of the codes alone was 1.000 (docs/scale.md)
ONE_THREAD_BELOW = 16  # ivfpq searches of fewer queries run on one OpenMP thread
NORM_ROWS = 1 << 16  # rows normalised at a time
MIN_TRAIN_PER_CENTROID = 39  # FAISS warns below this many training points per centroid
PQ_NBITS = 4  # fast-scan PQ codes are 4 bits
# At 1 M x 768, 1 024 lists built in 194 s against 399 s for 2 000, with 1.6 against 3.1 ms a query
# and the same eval-shape rate and recall (docs/scale.md, "ivfpq's lists").
IVFPQ_MAX_LISTS = 1024
FORMAT_VERSION = 1
INDEX_FILE, KEYS_FILE, META_FILE, ORDER_FILE = "index.faiss", "keys.parquet", "meta.json", "id_order.npy"
MANIFEST_KIND = "reference index"  # clibd.atomic's manifest, written last by save and checked by load
# auto: exact search below this many keys, ivfpq from it (CPU; docs/scale.md, "Which kind").
AUTO_IVFPQ_FROM = 100_000


class IndexMismatchError(ValueError):
    """A saved index that does not fit what the caller expects (dimension, checkpoint)."""


def normalized_float32(x: np.ndarray, what: str) -> np.ndarray:
    """A C-contiguous float32 L2-normalised copy of ``x`` ``[n, d]``; zero or non-finite rows are an error.

    Divided in float64 by scikit-learn's row norms (``sqrt(einsum("ij,ij->i"))``), then rounded to
    float32: the arithmetic of the published evaluation (``normalize`` in ``make_prediction``, on
    float64 features; docs/fidelity.md), so that near-ties fall as they fell there."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array [n, dim], got shape {x.shape}")
    out = np.empty(x.shape, dtype=np.float32)
    bad = np.empty(len(x), dtype=bool)
    for start in range(0, len(x), NORM_ROWS):  # by blocks: float64 temporaries of a block, not of all keys
        rows = slice(start, start + NORM_ROWS)
        block = np.asarray(x[rows], dtype=np.float64)
        bad[rows] = ~np.isfinite(block).all(axis=1)
        finite = np.where(bad[rows, None], 0.0, block)
        norms = np.sqrt(np.einsum("ij,ij->i", finite, finite))
        bad[rows] |= norms == 0
        out[rows] = finite / np.where(bad[rows], 1.0, norms)[:, None]
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{what}: {len(rows)} rows are zero or non-finite (first rows {rows[:5].tolist()})")
    return out


def auto_kind(count: int, gpu: bool = False) -> str:
    """The kind ``auto`` picks for ``count`` keys: ``flat`` (exact, as published) below
    ``AUTO_IVFPQ_FROM`` keys and on a GPU (FAISS has no GPU ivfpq), ``ivfpq`` from there on the CPU."""
    return "flat" if gpu or count < AUTO_IVFPQ_FROM else "ivfpq"


def default_nlist(count: int, kind: str = "ivf") -> int:
    """Inverted lists for ``count`` keys: ``2*sqrt(N)``, at most ``N/39`` (enough points to train each);
    for ``ivfpq`` at most ``IVFPQ_MAX_LISTS``: adding a key compares it with every list's centroid
    (N x nlist for a library: 2*sqrt(N) lists made the build grow as N^1.5), while a query's fast-scan
    of its ``nprobe`` lists stays cheap with longer lists (docs/scale.md, "ivfpq's lists")."""
    nlist = max(1, min(round(2 * math.sqrt(count)), count // MIN_TRAIN_PER_CENTROID))
    return min(nlist, IVFPQ_MAX_LISTS) if kind == "ivfpq" else nlist


def _use_gpu(device: str, kind: str) -> bool:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "cuda" and gpus == 0:
        raise RuntimeError("device='cuda' but FAISS sees no GPU (install faiss-gpu instead of faiss-cpu)")
    if device == "cuda" and kind in CPU_KINDS:
        raise ValueError(f"FAISS has no GPU version of kind {kind!r}; use kind='flat' or 'ivf' on the GPU, "
                         "or device='cpu'")  # fmt: skip
    return gpus > 0 and device != "cpu" and kind not in CPU_KINDS


@contextlib.contextmanager
def _one_openmp_thread() -> Iterator[None]:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _to_all_gpus(index: faiss.Index) -> faiss.Index:
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True  # split the keys across GPUs instead of replicating them
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _flat_storage(index: faiss.Index) -> Optional[faiss.IndexFlatCodes]:
    """The full-vector storage that grows with every key (flat, the ivfpq re-rank, HNSW), if any."""
    if isinstance(index, faiss.IndexRefine):
        return faiss.downcast_index(index.refine_index)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.downcast_index(index.storage)
    return index if isinstance(index, faiss.IndexFlatCodes) else None


def _reserve(index: faiss.Index, count: int) -> None:
    """Allocate the full vectors of ``count`` keys at once, so that batched adds never reallocate
    (std::vector doubles: old and new copies, ~2x the vectors, live together for a moment; 30 GB
    for 5 M x 768). FAISS exposes no ``reserve``: growing then shrinking a std::vector keeps its capacity."""
    storage = _flat_storage(index)
    if storage is not None and count > storage.ntotal:
        size = storage.codes.size()
        storage.codes.resize(count * storage.code_size)
        storage.codes.resize(size)


def _read_part(directory: Path, name: str, read: Callable[[Path], Any]) -> Any:
    """One file of a saved index; a truncated or garbled one is an error naming it."""
    try:
        return read(directory / name)
    except (ValueError, RuntimeError, OSError) as err:  # JSON, faiss and parquet errors
        raise ValueError(f"index {directory}: {name} cannot be read ({str(err).splitlines()[0][:200]})") from None


class ReferenceIndex:
    """Cosine search over reference embeddings: ``add`` keys, ``search`` queries, ``save``/``load``.

    ``positions`` returned by ``search`` index ``self.ids`` and ``self.taxonomy`` (row order
    of ``add``). ``metadata`` is a free JSON-able dict saved with the index; ``checkpoint_hash``
    names the model that made the embeddings, checked by ``load``.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        device: str = "auto",
        nlist: Optional[int] = None,
        nprobe: int = 32,
        ef_search: int = 128,
        hnsw_m: int = 32,
        pq_m: Optional[int] = None,
        k_factor: int = K_FACTOR,
        checkpoint_hash: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
    ) -> None:
        if kind not in (*KINDS, AUTO):
            raise ValueError(f"index kind must be one of {(*KINDS, AUTO)}, got {kind!r}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim, self.device = dim, device
        self.nlist, self.nprobe, self.ef_search, self.hnsw_m = nlist, nprobe, ef_search, hnsw_m
        self._pq_m, self._k_factor = pq_m, k_factor
        self.checkpoint_hash = checkpoint_hash
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._keys = KeyIds()
        self._taxonomy_chunks: list[pd.DataFrame] = []  # per add(), compact; joined on first access
        self._reserved = 0
        # auto resolves to flat wherever a GPU would be used, so it decides the device like flat does.
        self._gpu = _use_gpu(device, "flat" if kind == AUTO else kind)
        self._set_kind(kind)
        self._index: Optional[faiss.Index] = None  # built on the first add (IVF needs the keys to train)

    def _set_kind(self, kind: str) -> None:
        pq_m, k_factor = (self._pq_m or max(1, self.dim // 2), self._k_factor) if kind == "ivfpq" else (None, None)
        if pq_m is not None and self.dim % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the dimension {self.dim}")
        self.kind, self.pq_m, self.k_factor = kind, pq_m, k_factor

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def ids(self) -> np.ndarray:
        """Key ids in position order (numpy ``StringDType``: indexing gives ``str``; ``.astype(object)``)."""
        return self._keys.ids

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        """The position of each of ``ids`` (int64; ``-1`` for an id the index does not hold)."""
        return self._keys.positions(ids)

    @property
    def taxonomy(self) -> Optional[pd.DataFrame]:
        """The keys' taxonomy (one row per position; ranks categorical, ``clibd.index.keys``), or None."""
        if len(self._taxonomy_chunks) > 1:
            self._taxonomy_chunks = [join_taxonomy(self._taxonomy_chunks)]
        return self._taxonomy_chunks[0] if self._taxonomy_chunks else None

    @property
    def on_gpu(self) -> bool:
        return self._gpu

    def _build(self, first: np.ndarray) -> faiss.Index:
        if self.kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif self.kind == "hnsw":
            index = faiss.index_factory(self.dim, f"HNSW{self.hnsw_m},Flat", faiss.METRIC_INNER_PRODUCT)
        else:
            index = self._build_ivf(first)
        return _to_all_gpus(index) if self._gpu else index

    def _build_ivf(self, sample: np.ndarray) -> faiss.Index:
        """IVF lists trained on a seeded sample of the first batch; ivfpq adds the codes and the re-rank."""
        if self.nlist is None:
            self.nlist = default_nlist(max(len(sample), self._reserved), self.kind)
        if len(sample) > TRAIN_PER_LIST * self.nlist:
            rows = np.random.default_rng(0).choice(len(sample), TRAIN_PER_LIST * self.nlist, replace=False)
            sample = sample[np.sort(rows)]
        params = faiss.ClusteringParameters()
        params.niter = KMEANS_ITERATIONS
        quantizer = faiss.IndexFlatIP(self.dim)
        faiss.Clustering(self.dim, self.nlist, params).train(sample, quantizer)  # one GEMM-bound k-means
        if self.kind == "ivf":
            return faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexIVFPQFastScan(
            quantizer, self.dim, self.nlist, self.pq_m, PQ_NBITS, faiss.METRIC_INNER_PRODUCT
        )
        index.pq.cp.niter = KMEANS_ITERATIONS
        # pq_m tiny k-means (16 centroids each) are all OpenMP synchronisation: 20.6 s with 2 threads,
        # 0.17 s with 1, for 32 sub-quantizers on 2 000 keys on a loaded 2-core machine.
        with _one_openmp_thread():
            index.train(sample)
        refined = faiss.IndexRefineFlat(index)  # the exact re-rank; it keeps the full vectors
        refined.k_factor = self.k_factor
        return refined

    def _apply_search_params(self) -> None:
        if self.kind in IVF_KINDS:
            space = faiss.GpuParameterSpace() if self._gpu else faiss.ParameterSpace()
            space.set_index_parameter(self._index, "nprobe", self.nprobe)
            if isinstance(self._index, faiss.IndexRefine):  # absent from ivfpq indexes saved before the re-rank
                self._index.k_factor = self.k_factor
        elif self.kind == "hnsw":
            self._index.hnsw.efSearch = self.ef_search

    def reserve(self, count: int) -> None:
        """Expect ``count`` keys in all, added in batches: call before the first ``add``. ``auto`` picks,
        and IVF lists are sized, for ``count`` keys rather than the first batch (which must still hold
        the IVF training sample, ``TRAIN_PER_LIST`` keys per list), and the full vectors are allocated
        once instead of growing by doubling (``_reserve``)."""
        if self._index is not None:
            raise ValueError("reserve() goes before the first add()")
        self._reserved = count

    def add(self, embeddings: np.ndarray, ids: Sequence[str], taxonomy: Optional[pd.DataFrame] = None) -> None:
        """Append keys. ``ids`` unique strings, one per row; ``taxonomy`` one row per key (rank columns) or None."""
        x = normalized_float32(embeddings, "key embeddings")
        if x.shape[1] != self.dim:
            raise ValueError(f"key embeddings have dim {x.shape[1]}, the index {self.dim}")
        ids = as_strings(ids)  # ids are strings on disk too
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} key embeddings")
        if (taxonomy is None) != (not self._taxonomy_chunks) and len(self):
            raise ValueError("add taxonomy with every batch of keys or with none")
        if taxonomy is not None and len(taxonomy) != len(x):
            raise ValueError(f"taxonomy has {len(taxonomy)} rows for {len(x)} key embeddings")
        compact = None if taxonomy is None else compact_taxonomy(taxonomy)
        count = len(self)
        self._keys.append(ids)  # refuses duplicates, within the batch or with the keys held
        try:
            if self._index is None:
                if self.kind == AUTO:
                    self._set_kind(auto_kind(max(len(x), self._reserved), self._gpu))
                self._index = self._build(x)
                if not self._gpu:
                    _reserve(self._index, self._reserved)
            self._index.add(x)
        except BaseException:
            self._keys = KeyIds(self._keys.ids[:count])  # the batch's ids go with its vectors
            raise
        if compact is not None:
            self._taxonomy_chunks.append(compact)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [Q,k] float32, positions [Q,k] int64)``, most similar first.

        ``k`` larger than the number of keys is an error; approximate kinds may return
        position ``-1`` (score ``-inf``) where they found fewer than k keys.
        """
        if not len(self):
            raise ValueError("search on an empty ReferenceIndex: add keys first")
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} must lie in 1..{len(self)} (the number of keys)")
        q = normalized_float32(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dim {q.shape[1]}, the index {self.dim}")
        self._apply_search_params()  # nprobe / ef_search may have been changed since the last search
        # A few ivfpq queries on one thread: the re-rank's parallel region made one query wait 10-15 ms for a
        # second thread on a busy 2-core machine, against 0.12-0.14 ms on one (docs/scale.md).
        few = self.kind == "ivfpq" and len(q) < ONE_THREAD_BELOW
        with _one_openmp_thread() if few else contextlib.nullcontext():
            scores, positions = self._index.search(q, k)
        scores = np.where(positions < 0, -np.inf, scores).astype(np.float32)
        # Re-sort: similarity descending, then key position ascending (missing last).
        tiebreak = np.where(positions < 0, np.iinfo(np.int64).max, positions)
        order = np.lexsort((tiebreak, -scores), axis=1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(positions, order, 1).astype(np.int64)

    def save(self, directory: str | Path, extra_files: Sequence[str] = ()) -> Path:
        """Write ``index.faiss``, ``keys.parquet`` and ``meta.json`` into ``directory``, then the manifest
        of those and of ``extra_files`` (others written there first, e.g. a library's key barcodes)."""
        if self._index is None:
            raise ValueError("refusing to save an empty ReferenceIndex")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST).unlink(missing_ok=True)  # until the new one is written, the folder is unfinished
        cpu_index = faiss.index_gpu_to_cpu(self._index) if self._gpu else self._index
        # Written beside and renamed into place: a loaded index maps the old files (the ivfpq re-rank's
        # vectors, the id order), which must not be truncated under it (saving over the folder it was loaded from).
        faiss.write_index(cpu_index, str(directory / f"{INDEX_FILE}.tmp"))
        os.replace(directory / f"{INDEX_FILE}.tmp", directory / INDEX_FILE)
        with open(directory / f"{ORDER_FILE}.tmp", "wb") as file:
            np.save(file, np.asarray(self._keys.order, dtype=np.int64))
        os.replace(directory / f"{ORDER_FILE}.tmp", directory / ORDER_FILE)
        keys = pd.DataFrame({"id": pd.array(self.ids, dtype="string")})
        if self.taxonomy is not None:
            keys = pd.concat([keys, self.taxonomy], axis=1)
        keys.to_parquet(directory / KEYS_FILE, index=False)
        meta = {
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "kind": self.kind,
            "count": len(self),
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "hnsw_m": self.hnsw_m,
            "pq_m": self.pq_m,
            "k_factor": self.k_factor,
            "checkpoint_hash": self.checkpoint_hash,
            "metadata": self.metadata,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        files = [INDEX_FILE, ORDER_FILE, KEYS_FILE, META_FILE, *extra_files]
        write_manifest(directory, MANIFEST_KIND, files, self.checkpoint_hash)
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        expected_dim: Optional[int] = None,
        expected_checkpoint_hash: Optional[str] = None,
        device: str = "auto",
    ) -> "ReferenceIndex":
        """Read a saved index; refuse one whose dim or checkpoint hash differs from the expected."""
        directory = Path(directory)
        missing = [name for name in (INDEX_FILE, KEYS_FILE, META_FILE) if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a saved ReferenceIndex: missing {missing}")
        verify_manifest(directory, MANIFEST_KIND, "reference index")  # whole, and all of one write
        meta = _read_part(directory, META_FILE, lambda path: json.loads(path.read_text()))
        if expected_dim is not None and meta["dim"] != expected_dim:
            raise IndexMismatchError(
                f"index {directory} holds {meta['dim']}-d embeddings but the model makes {expected_dim}-d ones; "
                "rebuild the index with this checkpoint"
            )
        if expected_checkpoint_hash is not None and meta["checkpoint_hash"] != expected_checkpoint_hash:
            raise IndexMismatchError(
                f"index {directory} was built with checkpoint {meta['checkpoint_hash']!r}, not "
                f"{expected_checkpoint_hash!r}; its embeddings are not comparable:"
                f" rebuild the index with this checkpoint"
            )
        self = cls(
            meta["dim"],
            meta["kind"],
            device,
            nlist=meta["nlist"],
            nprobe=meta["nprobe"],
            ef_search=meta["ef_search"],
            hnsw_m=meta["hnsw_m"],
            pq_m=meta.get("pq_m"),  # absent from indexes saved before ivfpq existed
            k_factor=meta.get("k_factor") or K_FACTOR,  # absent from indexes saved before the re-rank
            checkpoint_hash=meta["checkpoint_hash"],
            metadata=meta["metadata"],
        )
        # ivfpq: the re-rank's full vectors stay on disk, mapped (IO_FLAG_MMAP_IFC maps IndexFlat storage only).
        flags = faiss.IO_FLAG_MMAP_IFC if meta["kind"] == "ivfpq" else 0
        index = _read_part(directory, INDEX_FILE, lambda path: faiss.read_index(str(path), flags))
        keys = _read_part(directory, KEYS_FILE, pd.read_parquet)
        if index.ntotal != len(keys) or index.d != meta["dim"]:
            raise IndexMismatchError(
                f"index {directory} is inconsistent: {index.ntotal} vectors of dim {index.d}, "
                f"{len(keys)} key rows, meta dim {meta['dim']}"
            )
        self._index = _to_all_gpus(index) if self._gpu else index
        ids = as_strings(keys.pop("id"))
        order = None  # libraries saved before id_order.npy: sorted here
        if (directory / ORDER_FILE).is_file():
            order = _read_part(directory, ORDER_FILE, lambda path: np.load(path, mmap_mode="r"))
        self._keys = _read_part(directory, ORDER_FILE, lambda _: KeyIds(ids, order))
        self._taxonomy_chunks = [compact_taxonomy(keys)] if len(keys.columns) else []  # older files: Arrow strings
        return self
