"""The paths a BIOSCAN-5M-sized library goes through (bench/scale_5m.py), at test size: the demo's
metadata-only generator, `clibd serve`'s start-up over a library's keys, the bench's growth arithmetic."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.scale_5m import bars, growth, tiny_dna_model
from clibd.config import DataConfig
from clibd.data.demo import generate_demo, simulate_demo
from clibd.data.sources import read_specimens
from clibd.embed.run_dir import checkpoint_hash
from clibd.index.faiss_index import ReferenceIndex


def test_metadata_only_demo_is_the_demo_table_and_reads_without_images(tmp_path, monkeypatch) -> None:
    # Up to one block, photos=False makes the very table of the full demo (same seed).
    pd.testing.assert_frame_equal(simulate_demo(1200, 7, photos=False).table, simulate_demo(1200, 7).table)
    # In blocks (as at 5 M rows): the same layout, read by the real reader with no images folder.
    monkeypatch.setattr("clibd.data.demo.barcodes.BLOCK", 500)
    monkeypatch.setattr("clibd.data.demo.generate.BLOCK", 500)
    table = generate_demo(tmp_path, 1700, 7, photos=False)
    assert not (tmp_path / "bioscan5m" / "images").exists()
    read, skips = read_specimens(DataConfig(root=str(tmp_path), format="bioscan5m"), require_image=False)
    assert len(read) == len(table) == 1700 and skips.counts == {}
    assert read["processid"].is_unique and read["dna_barcode"].str.len().min() > 100
    full = simulate_demo(1700, 7).table
    assert table.dtypes.equals(full.dtypes) and (table.columns == full.columns).all()
    assert set(table["split"]) == set(full["split"])


def _jpeg(path: Path) -> Path:
    Image.new("RGB", (40, 30), (200, 120, 40)).save(path, "JPEG")
    return path


@pytest.fixture(scope="module")
def small_library(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny DNA-only model and a 3 000-key ivfpq library of it, two keys with a photo."""
    folder = tmp_path_factory.mktemp("library")
    model = tiny_dna_model(16, folder / "model")
    n = 3000
    refs = pd.array([None] * n, dtype="string")
    refs[[5, 2999]] = [str(_jpeg(folder / "a.jpg")), str(_jpeg(folder / "b.jpg"))]
    taxonomy = pd.DataFrame(
        {
            "order": pd.array([f"O{i % 3}" for i in range(n)], dtype="string"),
            "family": pd.array([f"F{i % 17}" for i in range(n)], dtype="string"),
            "genus": pd.array([f"G{i % 61}" for i in range(n)], dtype="string"),
            "species": pd.array([f"G{i % 61} s{i % 401}" if i % 3 else None for i in range(n)], dtype="string"),
            "image_ref": refs,
        }
    )
    index = ReferenceIndex(
        16, "ivfpq", device="cpu", checkpoint_hash=checkpoint_hash(model),
        metadata={"modality": "dna", "thresholds": {"dna": {"threshold": 0.5}}},
    )  # fmt: skip
    index.add(np.random.default_rng(0).normal(size=(n, 16)), [f"K{i:05d}" for i in range(n)], taxonomy)
    index.save(folder / "library")
    return model, folder / "library"


@pytest.mark.filterwarnings("ignore:no run config.yaml")  # a DNA-only model: no image normalisation to find
def test_serve_starts_on_a_library_without_a_python_object_per_key(small_library) -> None:
    from clibd.serve.service import Classifier, Limits
    from clibd.serve.uploads import Upload

    model, library = small_library
    classifier = Classifier(model, library, k=5, device="cpu")
    health = classifier.health()
    assert (health["keys"], health["keys_with_photo"], health["dim"], health["index_modality"]) == (3000, 2, 16, "dna")
    assert health["thresholds"] == {"dna": 0.5}
    # Thumbnails by key id: found by binary search over the ids, only for keys that have a photo.
    assert Image.open(io.BytesIO(classifier.thumbnail("K02999"))).format == "JPEG"
    assert classifier.thumbnail("K00006") is None and classifier.thumbnail("../a.jpg") is None
    barcode = Upload("new.fasta", b">new\n" + b"ACGTTGCA" * 80 + b"\n")
    answer = classifier.classify([], [barcode], Limits())
    (row,) = answer["specimens"][0]["results"]
    assert row["evidence"] == "dna" and len(row["neighbours"]) == 5
    for key in row["neighbours"]:
        assert key["thumbnail"] == (f"/api/thumbnail/{key['id']}" if key["id"] in ("K00005", "K02999") else None)
        assert key["order"] == f"O{int(key['id'][1:]) % 3}"  # the key's own ranks, from the codes


def test_growth_exponents_and_bars() -> None:
    stage = {"wall_s": 2.0, "peak_rss_gb": 1.0, "rise_gb": 0.5}
    runs = {
        "1000": {"stages": {"read": stage, "serve start-up": {"wall_s": 10.0, "peak_rss_gb": 1.0}}},
        "100000": {
            "stages": {
                "read": {"wall_s": 200.0, "peak_rss_gb": 1000**0.5, "rise_gb": 50.0},
                "serve start-up": {"wall_s": 59.0, "peak_rss_gb": 2.9},
            }
        },
    }
    grown = growth(runs)
    assert (grown["from_rows"], grown["to_rows"]) == (1000, 100000)
    assert grown["stages"]["read"] == {"wall_s": 1.0, "peak_rss_gb": 0.75, "rise_gb": 1.0}
    assert bars(runs["100000"], grown) == {
        "startup_s <= 60": True,
        "startup_peak_rss_gb <= 3": True,
        "no stage grows faster than linearly (exponent <= 1.05)": True,
    }
    runs["100000"]["stages"]["read"]["wall_s"] = 2000.0  # exponent 1.5
    assert not bars(runs["100000"], growth(runs))["no stage grows faster than linearly (exponent <= 1.05)"]
    assert growth({"1000": runs["1000"]}) == {}


def test_library_scale_rows_and_the_recall_gate(monkeypatch) -> None:
    from bench import library_scale

    rows = {r.benchmark: r for r in library_scale.run("cpu", True, kinds=("ivfpq",))}
    shapes = ("memory", "latency", "batch", "eval shape")
    assert list(rows) == ["search flat: latency", *(f"search ivfpq: {shape}" for shape in shapes)]
    evaluation = rows["search ivfpq: eval shape"]
    assert evaluation.unit == "queries/s" and evaluation.workload.startswith("5,000 queries/call, top-5; 2,000 keys")
    assert evaluation.ratio == pytest.approx(evaluation.ours / evaluation.baseline)  # recall@1 1.000 here
    assert all(r.goal is None for r in rows.values())  # goals hold at make bench's size only
    # A kind below the recall bar gets no speed credit; its memory still counts.
    monkeypatch.setattr(library_scale, "RECALL_BAR", 1.01)
    monkeypatch.setattr(library_scale, "FULL_BENCH", (2000, 64))
    gated = {r.benchmark: r for r in library_scale.run("cpu", True, kinds=("ivfpq",))}
    assert gated["search ivfpq: eval shape"].ratio == 0 and gated["search ivfpq: eval shape"].met is False
    assert gated["search ivfpq: memory"].ratio > 1 and gated["search ivfpq: memory"].goal == 10.0
