"""``ReferenceIndex``: cosine nearest-key search over FAISS, with the keys' ids and taxonomy.

Vectors are L2-normalised float32 (a copy; the caller's arrays are never changed), so
inner product is cosine similarity. Kinds:

- ``flat``: exact ``IndexFlatIP`` (the default, and what the published evaluation used);
- ``ivf``: ``IVF{nlist},Flat``, trained on the first ``add`` batch; ``nlist`` defaults to
  ``4*sqrt(N)`` (at most ``N/39``, FAISS's minimum of training points per list);
  ``nprobe`` lists are visited per query;
- ``ivfpq``: ``IVF{nlist},PQ{pq_m}x{pq_nbits}``, for libraries of millions of keys: each key
  is stored as ``pq_m`` codes of ``pq_nbits`` bits (``pq_m`` bytes at 8 bits) instead of
  ``4*dim`` bytes; ``pq_m`` defaults to ``dim/4`` (192 bytes for 768-d keys: a 5 M-key
  library in ~1 GB, docs/scale.md), ``pq_nbits`` to 8, or fewer when the first batch is too
  small to train 2**8 centroids per sub-quantizer (39 points each);
- ``hnsw``: ``HNSW32,Flat`` with ``ef_search`` (CPU only: FAISS has no GPU HNSW).

IVF kinds train their k-means on at most ``TRAIN_PER_LIST * nlist`` keys of the first
batch, drawn with a fixed seed: FAISS would otherwise use up to 256 per list, four times the
time for the same lists at millions of keys.

``device="auto"`` uses every GPU FAISS sees (``index_cpu_to_all_gpus``, sharded) and the
CPU otherwise; ``device="cuda"`` without a GPU build of FAISS is an error.

Search results are sorted by similarity, ties broken by key position (the key added
first comes first), so results do not depend on FAISS's heap order.

On disk (``save``): ``index.faiss`` (the CPU index), ``keys.parquet`` (``id`` + taxonomy
columns), ``meta.json`` (dim, kind, parameters, ``checkpoint_hash`` and the free
``metadata`` dict, e.g. a calibrated new-species threshold).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import faiss
import numpy as np
import pandas as pd

KINDS = ("flat", "ivf", "ivfpq", "hnsw")
IVF_KINDS = ("ivf", "ivfpq")
TRAIN_PER_LIST = 64
MIN_TRAIN_PER_CENTROID = 39  # FAISS warns below this many training points per centroid
GPU_PQ_MAX_BYTES = 96  # the largest code FAISS's GPU IVFPQ takes (8-bit codes)
FORMAT_VERSION = 1
INDEX_FILE, KEYS_FILE, META_FILE = "index.faiss", "keys.parquet", "meta.json"


class IndexMismatchError(ValueError):
    """A saved index that does not fit what the caller expects (dimension, checkpoint)."""


def normalized_float32(x: np.ndarray, what: str) -> np.ndarray:
    """A C-contiguous float32 L2-normalised copy of ``x`` ``[n, d]``; zero or non-finite rows are an error."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array [n, dim], got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    norms = np.linalg.norm(np.where(bad[:, None], 0.0, x), axis=1)
    bad |= norms == 0
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{what}: {len(rows)} rows are zero or non-finite (first rows {rows[:5].tolist()})")
    x /= norms[:, None]
    return x


def default_nlist(count: int) -> int:
    """Inverted lists for ``count`` keys: ``4*sqrt(N)``, at most ``N/39`` (enough points to train each)."""
    return max(1, min(round(4 * math.sqrt(count)), count // MIN_TRAIN_PER_CENTROID))


def default_pq_nbits(count: int) -> int:
    """8 bits per PQ code, fewer (at least 1) when ``count`` cannot train 2**8 centroids per sub-quantizer."""
    return max(1, min(8, int(math.log2(max(2, count // MIN_TRAIN_PER_CENTROID)))))


def _use_gpu(device: str, kind: str, pq_bytes: int = 0) -> bool:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "cuda" and gpus == 0:
        raise RuntimeError("device='cuda' but FAISS sees no GPU (install faiss-gpu instead of faiss-cpu)")
    if device == "cuda" and kind == "hnsw":
        raise ValueError("FAISS has no GPU HNSW; use kind='flat' or 'ivf' on the GPU, or device='cpu'")
    if device == "cuda" and pq_bytes > GPU_PQ_MAX_BYTES:
        raise ValueError(f"FAISS's GPU IVFPQ takes codes of at most {GPU_PQ_MAX_BYTES} bytes, pq_m={pq_bytes}: "
                         "lower pq_m or use device='cpu'")  # fmt: skip
    return gpus > 0 and device != "cpu" and kind != "hnsw" and pq_bytes <= GPU_PQ_MAX_BYTES


def _to_all_gpus(index: faiss.Index) -> faiss.Index:
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True  # split the keys across GPUs instead of replicating them
    # IVFPQ codes over 48 bytes need float16 lookup tables on the GPU (shared memory); only PQ uses the flag so.
    options.useFloat16 = isinstance(index, faiss.IndexIVFPQ)
    return faiss.index_cpu_to_all_gpus(index, co=options)


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
        pq_nbits: Optional[int] = None,
        checkpoint_hash: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim, self.kind, self.device = dim, kind, device
        self.nlist, self.nprobe, self.ef_search, self.hnsw_m = nlist, nprobe, ef_search, hnsw_m
        self.pq_m, self.pq_nbits = (pq_m or max(1, dim // 4), pq_nbits) if kind == "ivfpq" else (None, None)
        if self.pq_m is not None and dim % self.pq_m:
            raise ValueError(f"pq_m={self.pq_m} must divide the dimension {dim}")
        self.checkpoint_hash = checkpoint_hash
        self.metadata: dict[str, Any] = dict(metadata or {})
        # Chunks per add(), joined on first access, so adding N keys in chunks stays O(N).
        self._id_chunks: list[np.ndarray] = []
        self._id_set: set[str] = set()
        self._taxonomy_chunks: list[pd.DataFrame] = []
        self._gpu = _use_gpu(device, kind, (self.pq_m or 0) * (self.pq_nbits or 8) // 8)
        self._index: Optional[faiss.Index] = None  # built on the first add (IVF needs the keys to train)

    def __len__(self) -> int:
        return len(self._id_set)

    @property
    def ids(self) -> np.ndarray:
        """Key ids (object array) in position order."""
        if len(self._id_chunks) != 1:
            self._id_chunks = [np.concatenate(self._id_chunks) if self._id_chunks else np.empty(0, dtype=object)]
        return self._id_chunks[0]

    @property
    def taxonomy(self) -> Optional[pd.DataFrame]:
        """The keys' taxonomy (one row per position), or None when added without."""
        if len(self._taxonomy_chunks) > 1:
            self._taxonomy_chunks = [pd.concat(self._taxonomy_chunks, ignore_index=True)]
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
            if self.nlist is None:
                self.nlist = default_nlist(len(first))
            codes = "Flat"
            if self.kind == "ivfpq":
                self.pq_nbits = self.pq_nbits or default_pq_nbits(len(first))
                codes = f"PQ{self.pq_m}x{self.pq_nbits}"
            index = faiss.index_factory(self.dim, f"IVF{self.nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
            if self.kind == "ivfpq":
                # dim/4 k-means of 2**nbits centroids each: FAISS's 25 iterations on 256 points per
                # centroid take minutes at 768-d; 10 on 64 lose little (docs/scale.md).
                index.pq.cp.niter, index.pq.cp.max_points_per_centroid = 10, TRAIN_PER_LIST
            if len(first) > TRAIN_PER_LIST * self.nlist:
                rows = np.random.default_rng(0).choice(len(first), TRAIN_PER_LIST * self.nlist, replace=False)
                first = first[np.sort(rows)]
            index.train(first)
        return _to_all_gpus(index) if self._gpu else index

    def _apply_search_params(self) -> None:
        if self.kind in IVF_KINDS:
            space = faiss.GpuParameterSpace() if self._gpu else faiss.ParameterSpace()
            space.set_index_parameter(self._index, "nprobe", self.nprobe)
        elif self.kind == "hnsw":
            self._index.hnsw.efSearch = self.ef_search

    def add(self, embeddings: np.ndarray, ids: Sequence[str], taxonomy: Optional[pd.DataFrame] = None) -> None:
        """Append keys. ``ids`` unique strings, one per row; ``taxonomy`` one row per key (rank columns) or None."""
        x = normalized_float32(embeddings, "key embeddings")
        if x.shape[1] != self.dim:
            raise ValueError(f"key embeddings have dim {x.shape[1]}, the index {self.dim}")
        ids = np.asarray(ids).astype(str).astype(object)  # ids are strings on disk too
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} key embeddings")
        if (taxonomy is None) != (not self._taxonomy_chunks) and len(self):
            raise ValueError("add taxonomy with every batch of keys or with none")
        if taxonomy is not None and len(taxonomy) != len(x):
            raise ValueError(f"taxonomy has {len(taxonomy)} rows for {len(x)} key embeddings")
        new = pd.Index(ids)
        dup = new[new.duplicated()].tolist() + sorted(self._id_set.intersection(new))
        if dup:
            raise ValueError(f"duplicate key ids, e.g. {dup[:5]}")
        if self._index is None:
            self._index = self._build(x)
        self._index.add(x)
        self._id_chunks.append(ids)
        self._id_set.update(new)
        if taxonomy is not None:
            self._taxonomy_chunks.append(taxonomy.reset_index(drop=True))

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
        scores, positions = self._index.search(q, k)
        scores = np.where(positions < 0, -np.inf, scores).astype(np.float32)
        # Re-sort: similarity descending, then key position ascending (missing last).
        tiebreak = np.where(positions < 0, np.iinfo(np.int64).max, positions)
        order = np.lexsort((tiebreak, -scores), axis=1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(positions, order, 1).astype(np.int64)

    def save(self, directory: str | Path) -> Path:
        """Write ``index.faiss``, ``keys.parquet`` and ``meta.json`` into ``directory``."""
        if self._index is None:
            raise ValueError("refusing to save an empty ReferenceIndex")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cpu_index = faiss.index_gpu_to_cpu(self._index) if self._gpu else self._index
        faiss.write_index(cpu_index, str(directory / INDEX_FILE))
        keys = pd.DataFrame({"id": pd.array(self.ids.tolist(), dtype="string")})
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
            "pq_nbits": self.pq_nbits,
            "checkpoint_hash": self.checkpoint_hash,
            "metadata": self.metadata,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
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
            pq_nbits=meta.get("pq_nbits"),
            checkpoint_hash=meta["checkpoint_hash"],
            metadata=meta["metadata"],
        )
        index = _read_part(directory, INDEX_FILE, lambda path: faiss.read_index(str(path)))
        keys = _read_part(directory, KEYS_FILE, pd.read_parquet)
        if index.ntotal != len(keys) or index.d != meta["dim"]:
            raise IndexMismatchError(
                f"index {directory} is inconsistent: {index.ntotal} vectors of dim {index.d}, "
                f"{len(keys)} key rows, meta dim {meta['dim']}"
            )
        self._index = _to_all_gpus(index) if self._gpu else index
        ids = keys["id"].to_numpy(dtype=object)
        self._id_chunks, self._id_set = [ids], set(ids.tolist())
        taxonomy = keys.drop(columns="id")
        self._taxonomy_chunks = [taxonomy] if len(taxonomy.columns) else []
        return self
