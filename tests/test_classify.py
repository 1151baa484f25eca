"""Prediction by weighted vote, the new-species threshold, and `clibd classify` end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clibd.index.vote import calibrate_threshold, predict_taxonomy, weighted_vote


def test_weighted_vote_hand_computed() -> None:
    scores = np.array(
        [
            [0.9, 0.5, 0.45],  # A 0.9 vs B 0.95: B wins with 0.95 / 1.85
            [0.8, 0.8, 0.1],  # A 0.8 vs B 0.8 tie -> nearer key's label A; C 0.1
            [0.7, 0.6, 0.5],  # first neighbour unknown: only B and A vote
            [0.3, 0.2, 0.1],  # nobody labelled
            [0.5, -0.4, -0.9],  # negative similarities weigh ~0, never against
        ]
    )
    labels = np.array([[0, 1, 1], [0, 1, 2], [-1, 1, 0], [-1, -1, -1], [2, 0, 0]])
    winner, share, best = weighted_vote(scores, labels)
    np.testing.assert_array_equal(winner, [1, 0, 1, -1, 2])
    np.testing.assert_allclose(share[:3], [0.95 / 1.85, 0.8 / 1.7, 0.6 / 1.1])
    assert np.isnan(share[3]) and np.isnan(best[3])
    assert share[4] == pytest.approx(0.5 / (0.5 + 2e-6))
    np.testing.assert_allclose(best[[0, 1, 2, 4]], [0.5, 0.8, 0.6, 0.5])


def _keys() -> tuple[pd.DataFrame, list[str]]:
    taxonomy = pd.DataFrame(
        {
            "order": ["Diptera", "Diptera", "Hymenoptera"],
            "family": ["Cecidomyiidae", "Sciaridae", "Braconidae"],
            "genus": ["Aus", "Bus", pd.NA],
            "species": [pd.NA, "Bus cus", pd.NA],
        },
        dtype="string",
    )
    return taxonomy, ["K0", "K1", "K2"]


def test_predict_taxonomy_rows_and_flags() -> None:
    taxonomy, key_ids = _keys()
    scores = np.array([[0.9, 0.8, 0.1], [0.4, 0.3, -1.0]])
    positions = np.array([[1, 0, 2], [2, 0, -1]])
    table = predict_taxonomy(scores, positions, taxonomy, key_ids, ["q1", "q2"], threshold=0.5)
    assert list(table["id"]) == ["q1", "q2"]
    assert list(table["order"]) == ["Diptera", "Hymenoptera"]  # q2: 0.4 vs 0.3, padded slot ignored
    assert table.loc[0, "order_vote_share"] == pytest.approx(1.7 / 1.8)
    assert table.loc[0, "family"] == "Sciaridae" and table.loc[0, "species"] == "Bus cus"
    assert table.loc[1, "genus"] == "Aus"  # the only labelled genus among q2's neighbours
    assert table.loc[1, "genus_similarity"] == pytest.approx(0.3)
    assert table.loc[1, "genus_vote_share"] == pytest.approx(1.0)
    assert pd.isna(table.loc[1, "species"])
    assert list(table["nearest_id"]) == ["K1", "K2"]
    assert list(table["possible_new_species"]) == [False, True]


def test_predict_taxonomy_rejects_mismatched_shapes() -> None:
    taxonomy, key_ids = _keys()
    with pytest.raises(ValueError, match="do not match"):
        predict_taxonomy(np.zeros((2, 3)), np.zeros((2, 2), dtype=int), taxonomy, key_ids, ["a", "b"], 0.5)


def test_calibrate_threshold_separable_and_overlapping() -> None:
    cal = calibrate_threshold(np.array([0.9, 0.8, 0.85]), np.array([0.3, 0.5, 0.4]))
    assert cal.threshold == pytest.approx(0.65) and cal.balanced_accuracy == 1.0
    # seen 0.9 0.6 0.4, unseen 0.5 0.3: best split 0.45 < t <= 0.5 -> (2/3 + 1) / 2
    cal = calibrate_threshold(np.array([0.9, 0.6, 0.4]), np.array([0.5, 0.3]))
    assert cal.threshold == pytest.approx(0.55)
    assert cal.balanced_accuracy == pytest.approx((2 / 3 + 1) / 2)
    assert (cal.seen_kept, cal.unseen_flagged, cal.n_seen, cal.n_unseen) == (pytest.approx(2 / 3), 1.0, 3, 2)


def test_calibrate_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    seen, unseen = rng.normal(0.7, 0.1, 57), rng.normal(0.55, 0.1, 31)
    cal = calibrate_threshold(seen, unseen)
    grid = np.linspace(0, 1.2, 4001)
    brute = max(((seen >= t).mean() + (unseen < t).mean()) / 2 for t in grid)
    assert cal.balanced_accuracy == pytest.approx(brute, abs=1e-12)
    assert ((seen >= cal.threshold).mean() + (unseen < cal.threshold).mean()) / 2 == cal.balanced_accuracy


def test_calibrate_threshold_needs_both_sets() -> None:
    with pytest.raises(ValueError, match="0 unseen"):
        calibrate_threshold(np.array([0.5]), np.array([]))


# ---- `clibd index build` + `clibd classify` on real photos and barcodes --------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from clibd.cli import main  # noqa: E402
from tests.data_paths import BOLD_4K, REAL_IMAGES, needs_shared_data  # noqa: E402

COLUMNS = [
    "id",
    *[f"{rank}{suffix}" for rank in ("order", "family", "genus", "species") for suffix in ("", "_similarity", "_vote_share")],
    "nearest_id",
    "best_similarity",
    "possible_new_species",
]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    from tests.helpers.real_table import real_run

    if not REAL_IMAGES.is_dir():
        pytest.skip(f"real data folder {REAL_IMAGES} is absent")
    folder = tmp_path_factory.mktemp("library")
    checkpoint = real_run(folder)
    assert main(["index", "build", "--checkpoint", str(checkpoint), "--modality", "dna",
                 "--out", str(folder / "index"), "eval.batch_size=8"]) == 0
    return checkpoint, folder / "index"


@needs_shared_data
def test_index_metadata(library: tuple[Path, Path]) -> None:
    from clibd.embed.run_dir import checkpoint_hash

    checkpoint, index = library
    meta = json.loads((index / "meta.json").read_text())
    assert meta["dim"] == 16 and meta["count"] == 30  # train (20) + key_unseen (10) keys
    assert meta["checkpoint_hash"] == checkpoint_hash(checkpoint)
    assert meta["metadata"]["modality"] == "dna"
    for query in ("image", "dna"):
        cal = meta["metadata"]["thresholds"][query]
        assert (cal["n_seen"], cal["n_unseen"], cal["keys_held_out"]) == (10, 5, 10)
        assert 0.5 <= cal["balanced_accuracy"] <= 1.0 and -1.0 <= cal["threshold"] <= 1.0 + 1e-5


@needs_shared_data
def test_classify_real_photos_one_row_each_and_skip_unreadable(library, tmp_path, capsys) -> None:
    checkpoint, index = library
    empty = tmp_path / "broken.jpg"
    empty.write_bytes(b"")
    out = tmp_path / "pred.csv"
    code = main(["classify", "--checkpoint", str(checkpoint), "--index", str(index),
                 "--images", str(REAL_IMAGES), str(empty), "--k", "3", "--out", str(out)])
    assert code == 0
    assert f"skipped {empty}" in capsys.readouterr().err
    table = pd.read_csv(out)
    photos = sorted(REAL_IMAGES.glob("*.jpg"))
    assert list(table.columns) == COLUMNS
    assert table["id"].tolist() == [p.stem for p in photos]
    keys = pd.read_parquet(index / "keys.parquet")
    assert set(table["species"]) <= set(keys["species"]) and table["nearest_id"].isin(keys["id"]).all()
    assert table["species_vote_share"].between(1 / 3 - 1e-4, 1).all()  # the winner has >= 1/k of the vote
    threshold = json.loads((index / "meta.json").read_text())["metadata"]["thresholds"]["image"]["threshold"]
    clear = (table["best_similarity"] - threshold).abs() > 1e-4  # the CSV rounds to 4 decimals
    assert (table.loc[clear, "possible_new_species"] == (table.loc[clear, "best_similarity"] < threshold)).all()


@needs_shared_data
def test_classify_real_barcodes_table_format(library, tmp_path, capsys) -> None:
    checkpoint, index = library
    subset = pd.read_csv(BOLD_4K, sep="\t", dtype=str).iloc[100:125]
    subset.loc[subset.index[3], "nucleotides"] = "NNNN---"
    path = tmp_path / "barcodes.tsv"
    subset.to_csv(path, sep="\t", index=False)
    assert main(["classify", "--checkpoint", str(checkpoint), "--index", str(index), "--dna", str(path),
                 "--format", "table"]) == 0
    captured = capsys.readouterr()
    assert f"skipped {subset['processid'].iloc[3]}: empty barcode" in captured.err
    lines = captured.out.strip().splitlines()
    assert lines[0].split() == COLUMNS and len(lines) == 1 + 24
    assert [line.split()[0] for line in lines[1:]] == subset["processid"].drop(subset.index[3]).tolist()


@needs_shared_data
def test_classify_refuses_an_index_of_another_checkpoint(library, tmp_path) -> None:
    from clibd.index.faiss_index import IndexMismatchError
    from tests.helpers.real_table import real_run

    _, index = library
    other = real_run(tmp_path, seed=1)
    with pytest.raises(IndexMismatchError, match="rebuild the index"):
        main(["classify", "--checkpoint", str(other), "--index", str(index), "--dna", str(BOLD_4K)])
