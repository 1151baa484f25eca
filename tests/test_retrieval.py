"""clibd.index.faiss_index.ReferenceIndex: exact search, approximate recall, ties, save/load, refusals."""

import json

import faiss
import numpy as np
import pandas as pd
import pytest

from bench.library_scale import clustered as library_keys
from clibd import ReferenceIndex
from clibd.atomic import write_manifest
from clibd.index.faiss_index import (
    AUTO_IVFPQ_FROM,
    INDEX_FILE,
    KEYS_FILE,
    MANIFEST_KIND,
    META_FILE,
    ORDER_FILE,
    IndexMismatchError,
    auto_kind,
    default_nlist,
)


def _clustered(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return centres[rng.integers(len(centres), size=n)] + rng.normal(size=(n, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 64)).astype(np.float32)
    return _clustered(20_000, 64, centres, rng), _clustered(500, 64, centres, rng)


def _taxonomy(n: int) -> pd.DataFrame:
    genus = pd.array([f"G{i % 7}" for i in range(n)], dtype="string")
    species = pd.array([None if i % 5 == 0 else f"G{i % 7} s{i % 13}" for i in range(n)], dtype="string")
    return pd.DataFrame({"genus": genus, "species": species})


def test_flat_is_exact_cosine_and_leaves_inputs_alone() -> None:
    rng = np.random.default_rng(1)
    keys = rng.normal(size=(300, 16)) * rng.uniform(0.1, 10, size=(300, 1))  # float64, not normalised
    queries = rng.normal(size=(40, 16))
    keys_before = keys.copy()
    index = ReferenceIndex(16, device="cpu")
    index.add(keys, ids=[f"k{i}" for i in range(300)])
    scores, positions = index.search(queries, 5)
    cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        keys / np.linalg.norm(keys, axis=1, keepdims=True)
    ).T
    want = np.argsort(-cos, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(positions, want)
    np.testing.assert_allclose(scores, np.take_along_axis(cos, want, 1), atol=1e-5)
    assert scores.dtype == np.float32 and positions.dtype == np.int64
    np.testing.assert_array_equal(keys, keys_before)
    assert index.ids[positions[0, 0]] == f"k{want[0, 0]}"


def test_ties_go_to_the_key_added_first() -> None:
    keys = np.array([[0, 1], [1, 0], [1, 0], [2, 0], [0, 3]], dtype=np.float32)  # keys 1..3 identical in direction
    index = ReferenceIndex(2, device="cpu")
    index.add(keys, ids=list("abcde"))
    scores, positions = index.search(np.array([[1.0, 0.0]] * 30), 4)  # 30 queries: FAISS's batched path too
    np.testing.assert_array_equal(positions, [[1, 2, 3, 0]] * 30)
    np.testing.assert_allclose(scores[0], [1, 1, 1, 0], atol=1e-6)


@pytest.mark.parametrize(
    "kind, options, weak", [("ivf", {"nprobe": 32}, {"nprobe": 1}), ("hnsw", {"ef_search": 128}, {"ef_search": 1})]
)
def test_approximate_recall_at_1_against_exact(clustered, kind: str, options: dict, weak: dict) -> None:
    keys, queries = clustered
    ids = np.arange(len(keys)).astype(str)
    exact = ReferenceIndex(64, "flat", device="cpu")
    exact.add(keys, ids)
    approx = ReferenceIndex(64, kind, device="cpu", **options)
    approx.add(keys, ids)
    _, want = exact.search(queries, 1)
    _, got = approx.search(queries, 1)
    recall = float((got[:, 0] == want[:, 0]).mean())
    assert recall >= 0.95, f"{kind} recall@1 {recall:.3f} < 0.95"
    # The search parameter is live: a starved search on the same index loses recall
    # (ivf nprobe 1 of 283 lists: 0.910 measured; hnsw ef_search 1 far less).
    for name, value in weak.items():
        setattr(approx, name, value)
    _, starved = approx.search(queries, 1)
    assert float((starved[:, 0] == want[:, 0]).mean()) <= recall - 0.05
    if kind == "ivf":
        assert approx.nlist == min(round(2 * np.sqrt(len(keys))), len(keys) // 39) == 283


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_save_load_round_trip(tmp_path, kind: str) -> None:
    rng = np.random.default_rng(2)
    keys, queries = rng.normal(size=(2000, 8)), rng.normal(size=(50, 8))
    index = ReferenceIndex(8, kind, device="cpu", checkpoint_hash="abc123", metadata={"new_species_threshold": 0.42})
    index.add(keys[:1500], [f"id{i}" for i in range(1500)], _taxonomy(2000).iloc[:1500])
    index.add(keys[1500:], [f"id{i}" for i in range(1500, 2000)], _taxonomy(2000).iloc[1500:])
    before = index.search(queries, 5)
    index.save(tmp_path / "ref")
    loaded = ReferenceIndex.load(tmp_path / "ref", expected_dim=8, expected_checkpoint_hash="abc123", device="cpu")
    after = loaded.search(queries, 5)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert loaded.ids.tolist() == [f"id{i}" for i in range(2000)]
    # Ranks are held as codes (categoricals, sorted categories), identical before and after the round trip.
    pd.testing.assert_frame_equal(loaded.taxonomy, index.taxonomy)
    assert loaded.taxonomy["genus"].cat.categories.tolist() == [f"G{i}" for i in range(7)]
    pd.testing.assert_frame_equal(loaded.taxonomy.astype("string"), _taxonomy(2000))
    assert loaded.metadata == {"new_species_threshold": 0.42}
    assert (loaded.kind, loaded.dim, loaded.checkpoint_hash, len(loaded)) == (kind, 8, "abc123", 2000)
    assert json.loads((tmp_path / "ref" / "meta.json").read_text())["count"] == 2000


def test_ivfpq_default_recall_bytes_per_key_and_mapped_rerank(tmp_path) -> None:
    """The 768-d default of docs/scale.md on the library benchmark's keys (~50 per species, small margins)."""
    keys, queries = library_keys(3000, 200, 768)
    ids = np.char.add("BSCAN", np.char.zfill(np.arange(3000).astype(str), 8))  # 13-character BOLD-like ids
    exact = ReferenceIndex(768, "flat", device="cpu")
    exact.add(keys, ids)
    approx = ReferenceIndex(768, "ivfpq", device="cpu")
    approx.add(keys, ids)
    # 2*sqrt(3000) = 110 lists, capped at 3000 // 39 = 76; dim/2 = 384 four-bit codes.
    assert (approx.nlist, approx.pq_m, approx.k_factor) == (76, 384, 32)
    # RAM per key, as docs/scale.md counts it: 192 B of codes + 8 B FAISS id (in the inverted lists)
    # + 16 B string id (numpy StringDType, inline up to 15 bytes) = 216 B.
    assert faiss.extract_index_ivf(approx._index).code_size == 192
    assert approx.ids.nbytes == 16 * 3000 and approx.ids[7] == "BSCAN00000007"
    _, want = exact.search(queries, 1)
    _, got = approx.search(queries, 1)
    # 1.000 measured (seeded data and k-means); 4-bit codes alone (k_factor 1) give 0.34: the re-rank is the recall.
    assert float((got[:, 0] == want[:, 0]).mean()) >= 0.97
    approx.k_factor = 1
    _, codes_only = approx.search(queries, 1)
    assert float((codes_only[:, 0] == want[:, 0]).mean()) <= 0.6
    approx.k_factor = 32
    approx.save(tmp_path / "ref")
    loaded = ReferenceIndex.load(tmp_path / "ref", device="cpu")
    # The full vectors of the re-rank are mapped from index.faiss, not read into RAM.
    assert not faiss.downcast_index(loaded._index.refine_index).codes.is_owned
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], approx.search(queries, 5)[1])
    loaded.save(tmp_path / "ref")  # over the mapped file: written beside it and renamed, so still readable
    np.testing.assert_array_equal(loaded.search(queries, 1)[1], got)
    with pytest.raises(ValueError, match="pq_m=5 must divide the dimension 32"):
        ReferenceIndex(32, "ivfpq", pq_m=5)


def test_load_refuses_mismatch(tmp_path) -> None:
    index = ReferenceIndex(4, device="cpu", checkpoint_hash="model-A")
    index.add(np.eye(4), list("abcd"))
    index.save(tmp_path)
    with pytest.raises(IndexMismatchError, match=r"4-d embeddings but the model makes 8-d"):
        ReferenceIndex.load(tmp_path, expected_dim=8)
    with pytest.raises(IndexMismatchError, match=r"'model-A', not 'model-B'"):
        ReferenceIndex.load(tmp_path, expected_checkpoint_hash="model-B")
    with pytest.raises(FileNotFoundError, match="not a saved ReferenceIndex"):
        ReferenceIndex.load(tmp_path / "nowhere")


def test_bad_input_is_refused_with_the_problem_named() -> None:
    index = ReferenceIndex(3, device="cpu")
    with pytest.raises(ValueError, match=r"zero or non-finite \(first rows \[1, 2\]\)"):
        index.add(np.array([[1, 0, 0], [0, 0, 0], [np.nan, 1, 0]]), list("abc"))
    with pytest.raises(ValueError, match="dim 2, the index 3"):
        index.add(np.ones((2, 2)), list("ab"))
    index.add(np.eye(3), list("abc"))
    with pytest.raises(ValueError, match=r"duplicate key ids, e.g. \['b'\]"):
        index.add(np.eye(3)[:1], ["b"])
    with pytest.raises(ValueError, match="k=4 must lie in 1..3"):
        index.search(np.eye(3), 4)
    with pytest.raises(ValueError, match="kind must be one of"):
        ReferenceIndex(3, kind="lsh")


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="checks the CPU-only build's refusal")
def test_cuda_without_gpu_faiss_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        ReferenceIndex(4, device="cuda")
    assert not ReferenceIndex(4, device="auto").on_gpu


def _ranks(n: int, offset: int = 0) -> pd.DataFrame:
    """Seven rank columns with holes, and a per-key image_ref, as clibd index build stores them."""
    i = np.arange(offset, offset + n)
    return pd.DataFrame(
        {
            "phylum": pd.array(["Arthropoda"] * n, dtype="string"),
            "class": pd.array(["Insecta"] * n, dtype="string"),
            "order": pd.array([f"O{j % 3}" for j in i], dtype="string"),
            "family": pd.array([f"F{j % 11}" if j % 4 else None for j in i], dtype="string"),
            "subfamily": pd.array([None] * n, dtype="string"),
            "genus": pd.array([f"G{j % 37}" for j in i], dtype="string"),
            "species": pd.array([f"G{j % 37} s{j % 301}" if j % 5 else None for j in i], dtype="string"),
            "image_ref": pd.array([f"/photos/{j}.jpg" if j % 2 else None for j in i], dtype="string"),
        }
    )


def test_taxonomy_is_held_as_codes_and_round_trips_exactly(tmp_path) -> None:
    rng = np.random.default_rng(3)
    index = ReferenceIndex(8, device="cpu")
    # Two batches whose categories differ (genus G0-G36 over 0..299, then more species): joined by codes.
    index.add(rng.normal(size=(300, 8)), [f"k{i}" for i in range(300)], _ranks(300))
    index.add(rng.normal(size=(700, 8)), [f"k{i}" for i in range(300, 1000)], _ranks(700, 300))
    taxonomy = index.taxonomy
    for rank in ("phylum", "class", "order", "family", "subfamily", "genus", "species"):
        categories = taxonomy[rank].cat.categories
        assert categories.tolist() == sorted(categories.tolist()) and categories.dtype == "string"
    assert taxonomy["species"].cat.codes.dtype == np.int16 and taxonomy["order"].cat.codes.dtype == np.int8
    assert taxonomy["subfamily"].isna().all() and taxonomy["image_ref"].dtype == "string"  # per-key: as given
    want = pd.concat([_ranks(300), _ranks(700, 300)], ignore_index=True)
    pd.testing.assert_frame_equal(taxonomy.astype("string"), want)
    # Codes: the seven ranks of 1 000 keys in < 10 B a key, not ~134 as Arrow strings.
    codes = sum(taxonomy[r].cat.codes.nbytes for r in taxonomy.columns if r != "image_ref")
    assert codes <= 10 * len(index)
    index.save(tmp_path / "new")
    loaded = ReferenceIndex.load(tmp_path / "new", device="cpu")
    pd.testing.assert_frame_equal(loaded.taxonomy, taxonomy)
    # A library saved before (ranks as Arrow strings, no id order; its manifest lists what it has) loads
    # into the same codes.
    keys = pd.read_parquet(tmp_path / "new" / KEYS_FILE)
    keys.astype("string").to_parquet(tmp_path / "new" / KEYS_FILE, index=False)
    (tmp_path / "new" / ORDER_FILE).unlink()
    write_manifest(tmp_path / "new", MANIFEST_KIND, [INDEX_FILE, KEYS_FILE, META_FILE])
    old = ReferenceIndex.load(tmp_path / "new", device="cpu")
    pd.testing.assert_frame_equal(old.taxonomy, taxonomy)
    assert old.positions(["k999", "k0"]).tolist() == [999, 0]


def test_positions_of_ids_by_binary_search(tmp_path) -> None:
    rng = np.random.default_rng(4)
    index = ReferenceIndex(4, device="cpu")
    ids = rng.permutation([f"BIOUG{i:05d}-A{i % 12}" for i in range(500)])  # not added in sorted order
    index.add(rng.normal(size=(200, 4)), ids[:200])
    index.add(rng.normal(size=(300, 4)), ids[200:])
    query = [ids[0], "absent", ids[499], ids[200], "", ids[123]]
    assert index.positions(query).tolist() == [0, -1, 499, 200, -1, 123]
    assert index.positions([]).tolist() == []
    with pytest.raises(ValueError, match=r"duplicate key ids, e.g. \['" + ids[7] + r"', 'x'\]"):
        index.add(rng.normal(size=(3, 4)), ["x", ids[7], "x"])
    assert len(index) == 500 and index.positions(["x"]).tolist() == [-1]  # the refused batch left nothing
    index.save(tmp_path)
    loaded = ReferenceIndex.load(tmp_path, device="cpu")
    assert isinstance(loaded._keys.order, np.memmap)  # the saved order, mapped: nothing sorted at start-up
    assert loaded.positions(query).tolist() == [0, -1, 499, 200, -1, 123]


def test_auto_kind_picks_by_key_count(tmp_path) -> None:
    # docs/scale.md, "Which kind": exact below AUTO_IVFPQ_FROM keys, ivfpq from there; exact on a GPU.
    assert (auto_kind(AUTO_IVFPQ_FROM - 1), auto_kind(AUTO_IVFPQ_FROM)) == ("flat", "ivfpq")
    assert auto_kind(10 * AUTO_IVFPQ_FROM, gpu=True) == "flat"
    rng = np.random.default_rng(5)
    small = ReferenceIndex(8, "auto", device="cpu")
    small.add(rng.normal(size=(500, 8)), [f"s{i}" for i in range(500)])
    assert small.kind == "flat"
    # Batches: reserve() names the total, so the first batch (the IVF training sample) picks for all of them.
    large = ReferenceIndex(8, "auto", device="cpu")
    large.reserve(AUTO_IVFPQ_FROM)
    first = 64 * min(round(2 * np.sqrt(AUTO_IVFPQ_FROM)), AUTO_IVFPQ_FROM // 39)
    large.add(rng.normal(size=(first, 8)), [f"k{i}" for i in range(first)])
    assert (large.kind, large.nlist, large.pq_m) == ("ivfpq", first // 64, 4)
    with pytest.raises(ValueError, match="reserve\\(\\) goes before the first add"):
        large.reserve(10)
    large.save(tmp_path)
    assert json.loads((tmp_path / "meta.json").read_text())["kind"] == "ivfpq"
    with pytest.raises(ValueError, match="pq_m=3 must divide the dimension 8"):
        ReferenceIndex(8, "auto", device="cpu", pq_m=3).add(
            rng.normal(size=(AUTO_IVFPQ_FROM, 8)), np.arange(AUTO_IVFPQ_FROM).astype(str)
        )


def test_ivfpq_lists_stop_at_1024() -> None:
    # 2*sqrt(N) lists, at most N/39; ivfpq at most 1 024 (its build compares every key with every list).
    assert default_nlist(3000) == default_nlist(3000, "ivfpq") == 76
    assert default_nlist(100_000) == default_nlist(100_000, "ivfpq") == 632
    assert (default_nlist(5_000_000), default_nlist(5_000_000, "ivfpq")) == (4472, 1024)
