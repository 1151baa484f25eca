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


def _inputs(modality: str, ids: list[str], rows: list[list[float]], quality: list[str]):
    from clibd.embed.inputs import EmbeddedInputs

    records = pd.DataFrame({"id": ids, "file": f"{modality}.in", "record": range(1, len(ids) + 1), "quality": quality})
    return EmbeddedInputs(modality, records, np.array(rows, dtype=np.float32))


def test_classify_specimens_fuses_photo_and_barcode_by_the_mean_similarity() -> None:
    from clibd.index.classify_specimens import classify_specimens
    from clibd.index.faiss_index import ReferenceIndex

    thresholds = {"image": {"threshold": 0.7}, "dna": {"threshold": 0.5}}
    index = ReferenceIndex(4, kind="flat", metadata={"thresholds": thresholds})
    taxonomy, key_ids = _keys()
    index.add(np.eye(4, dtype=np.float32)[:3], ids=key_ids, taxonomy=taxonomy)
    # s: image nearest K0 (0.8), DNA nearest K2 (0.8); mean similarity K0 0.4, K1 0.6, K2 0.4 -> K1.
    inputs = {
        "image": _inputs("image", ["s", "p", "f"], [[0.8, 0.6, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], ["", "", "blurry"]),
        "dna": _inputs(
            "dna",
            ["s", "d", "f"],
            [[0, 0.6, 0.8, 0], [0, 0.6, 0.8, 0], [np.nan] * 4],
            ["", "", "too_short (8 valid nt < 200)"],
        ),
    }
    table = classify_specimens(index, inputs, k=1).set_index("id")
    assert table.index.tolist() == ["s", "p", "f", "d"]
    assert table["evidence"].tolist() == ["image+dna", "image", "", "dna"]
    assert table["quality"].tolist() == ["", "", "image: blurry; dna: too_short (8 valid nt < 200)", ""]
    assert table["nearest_id"].tolist()[:2] == ["K1", "K2"] and pd.isna(table.loc["f", "nearest_id"])
    assert table.loc["s", "best_similarity"] == pytest.approx(0.6, abs=1e-6)
    assert table.loc["d", "nearest_id"] == "K2" and table.loc["d", "best_similarity"] == pytest.approx(0.8, abs=1e-6)
    # thresholds: fused = mean(0.7, 0.5) = 0.6, so 0.6 is not new; image 1.0 >= 0.7; dna 0.8 >= 0.5
    assert table["possible_new_species"].tolist()[:2] == [False, False] and table["possible_new_species"].isna()["f"]
    assert table["dna_record"].tolist()[:2] == [1, pd.NA] and table.loc["d", "dna_record"] == 2
    # keep_flagged uses the blurry photo (never the failed barcode), and the row still says why.
    kept = classify_specimens(index, inputs, k=1, keep_flagged=True).set_index("id")
    assert kept.loc["f", "evidence"] == "image" and kept.loc["f", "nearest_id"] == "K0"
    assert kept.loc["f", "quality"] == "image: blurry; dna: too_short (8 valid nt < 200)"
    # A calibrated image+dna threshold is used when the library has one.
    index.metadata["thresholds"]["image+dna"] = {"threshold": 0.65}
    assert classify_specimens(index, inputs, k=1).set_index("id").loc["s", "possible_new_species"]
    # Every photo unreadable (no image records at all): the barcodes are still classified.
    inputs["image"] = _inputs("image", [], np.zeros((0, 4)), [])
    alone = classify_specimens(index, inputs, k=1)
    assert alone["id"].tolist() == ["s", "d", "f"] and alone["evidence"].tolist() == ["dna", "dna", ""]
    assert alone["image_file"].isna().all() and alone["nearest_id"].tolist()[:2] == ["K2", "K2"]


def test_search_specimens_keeps_each_rows_nearest_keys_and_threshold() -> None:
    from clibd.index.classify_specimens import classify_specimens, search_specimens
    from clibd.index.faiss_index import ReferenceIndex

    thresholds = {"image": {"threshold": 0.7}, "dna": {"threshold": 0.5}}
    index = ReferenceIndex(4, kind="flat", metadata={"thresholds": thresholds})
    taxonomy, key_ids = _keys()
    index.add(np.eye(4, dtype=np.float32)[:3], ids=key_ids, taxonomy=taxonomy)
    inputs = {  # s fused: mean similarities K0 0.4, K1 0.6, K2 0.4; f: flagged photo, withheld
        "image": _inputs("image", ["s", "f"], [[0.8, 0.6, 0, 0], [1, 0, 0, 0]], ["", "blurry"]),
        "dna": _inputs("dna", ["s"], [[0, 0.6, 0.8, 0]], [""]),
    }
    found = search_specimens(index, inputs, k=5)  # k above the library's 3 keys: 3 columns
    pd.testing.assert_frame_equal(found.table, classify_specimens(index, inputs, k=5))
    assert found.positions[0, 0] == 1 and sorted(found.positions[0, 1:]) == [0, 2]  # K0 and K2 tie at 0.4
    assert found.positions[1].tolist() == [-1, -1, -1]
    np.testing.assert_allclose(found.scores[0], [0.6, 0.4, 0.4], atol=1e-6)
    assert np.isnan(found.scores[1]).all()
    assert found.thresholds[0] == pytest.approx(0.6) and np.isnan(found.thresholds[1])  # mean of 0.7 and 0.5


# ---- `clibd index build` + `clibd classify` on real photos and barcodes --------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from clibd.cli import main  # noqa: E402
from tests.data_paths import BOLD_4K, REAL_IMAGES, needs_shared_data  # noqa: E402

COLUMNS = [
    "id",
    "image_file",
    "dna_file",
    "dna_record",
    "evidence",
    "quality",
    "strand",
    *[
        f"{rank}{suffix}"
        for rank in ("order", "family", "genus", "species")
        for suffix in ("", "_similarity", "_vote_share", "_margin", "_identity")
    ],
    "nearest_id",
    "best_similarity",
    "identity",
    "overlap",
    "possible_new_species",
    "deepest_confident_rank",
]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    from tests.helpers.real_table import real_library

    if not REAL_IMAGES.is_dir():
        pytest.skip(f"real data folder {REAL_IMAGES} is absent")
    folder = tmp_path_factory.mktemp("library")
    return real_library(folder)


def _classify(library: tuple[Path, Path], *args: str) -> int:
    """``clibd classify`` with the library's checkpoint and index, then ``args``."""
    checkpoint, index = library
    return main(["classify", "--checkpoint", str(checkpoint), "--index", str(index), *args])


@needs_shared_data
def test_index_metadata(library: tuple[Path, Path]) -> None:
    from clibd.embed.run_dir import checkpoint_hash

    checkpoint, index = library
    meta = json.loads((index / "meta.json").read_text())
    assert meta["dim"] == 16 and meta["count"] == 30  # train (20) + key_unseen (10) keys
    assert meta["metadata"]["quality_skips"] == {"keys": 0, "val_seen": 0, "val_unseen": 0}  # real BOLD barcodes
    assert meta["checkpoint_hash"] == checkpoint_hash(checkpoint)
    assert meta["metadata"]["modality"] == "dna"
    assert list(meta["metadata"]["thresholds"]) == ["image", "dna", "image+dna"]  # + the fused photo and barcode
    for query in ("image", "dna", "image+dna"):
        cal = meta["metadata"]["thresholds"][query]
        assert (cal["n_seen"], cal["n_unseen"], cal["keys_held_out"]) == (10, 5, 10)
        assert 0.5 <= cal["balanced_accuracy"] <= 1.0 and -1.0 <= cal["threshold"] <= 1.0 + 1e-5


@needs_shared_data
def test_index_build_leaves_out_barcodes_failing_the_quality_minimums_counted(library, tmp_path, capsys) -> None:
    from clibd.config import QualityConfig
    from clibd.data.quality import barcode_quality

    checkpoint, index = library
    table = pd.read_csv(index.parent / "data" / "specimens.csv", dtype=str)
    strict = QualityConfig(min_valid_nt=500)  # BOLD BARCODE length
    fails = pd.Series([q != "" for q in barcode_quality(table["dna_barcode"].tolist(), strict)])
    expected = {
        role: int(fails[table["split"].isin(splits)].sum())
        for role, splits in (("keys", ["train", "key_unseen"]), ("val_seen", ["val"]), ("val_unseen", ["val_unseen"]))
    }
    assert expected["keys"] > 0 and expected["keys"] < 30  # the oracle: some, not all, keys fail
    out = tmp_path / "strict"
    assert (
        main(
            [
                "index",
                "build",
                "--checkpoint",
                str(checkpoint),
                "--modality",
                "dna",
                "--out",
                str(out),
                "eval.batch_size=8",
                "quality.min_valid_nt=500",
            ]
        )
        == 0
    )
    meta = json.loads((out / "meta.json").read_text())
    assert meta["metadata"]["quality_skips"] == expected and meta["count"] == 30 - expected["keys"]
    printed = capsys.readouterr().out
    assert f"left out by the barcode quality checks (cfg.quality, docs/quality.md): {expected}" in printed


@needs_shared_data
def test_classify_real_photos_one_row_each_and_unreadable_ones_say_why(library, tmp_path, capsys) -> None:
    index = library[1]
    empty = tmp_path / "broken.jpg"
    empty.write_bytes(b"")
    out = tmp_path / "pred.csv"
    code = _classify(library, "--images", str(REAL_IMAGES), str(empty), "--k", "3", "--out", str(out))
    assert code == 0
    err = capsys.readouterr().err
    assert f"{empty}: unreadable (empty file (0 bytes))" in err
    assert "classified 32 of 41 specimens" in err and "withheld 9" in err and "unreadable 1" in err
    every = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(every.columns) == COLUMNS
    broken = every.iloc[-1]  # the unreadable file has its row, after the folder's photos, with no prediction
    assert (broken["id"], broken["image_file"]) == ("broken", str(empty))
    assert broken["quality"] == "unreadable (empty file (0 bytes))"
    assert every.iloc[-1:][["evidence", "species", "nearest_id", "possible_new_species"]].isna().all().all()
    table = every.iloc[:-1]
    photos = sorted(REAL_IMAGES.glob("*.jpg"))
    assert table["id"].tolist() == [p.stem for p in photos]
    assert table["image_file"].tolist() == list(map(str, photos)) and table["dna_file"].isna().all()
    # Empty and blurry wells are withheld, the row says why; the 32 valid photos are classified.
    flagged = ~table["id"].str.startswith("valid_")
    assert table.loc[flagged, "quality"].isin(["empty_well", "blurry"]).all()
    withheld = ["evidence", "species_vote_share", "nearest_id", "possible_new_species"]
    assert table.loc[flagged, withheld].isna().all().all()
    assert table.loc[~flagged, "quality"].isna().all() and (table.loc[~flagged, "evidence"] == "image").all()
    valid = table[~flagged]
    keys = pd.read_parquet(index / "keys.parquet")
    # names below the deepest confident rank are withheld (the tiny model is untrained): the vote still ran
    assert valid["species_vote_share"].notna().all() and set(valid["species"].dropna()) <= set(keys["species"])
    assert valid["nearest_id"].isin(keys["id"]).all()
    assert valid["species_vote_share"].between(1 / 3 - 1e-4, 1).all()  # the winner has >= 1/k of the vote
    threshold = json.loads((index / "meta.json").read_text())["metadata"]["thresholds"]["image"]["threshold"]
    clear = (valid["best_similarity"] - threshold).abs() > 1e-4  # the CSV rounds to 4 decimals
    assert (valid.loc[clear, "possible_new_species"] == (valid.loc[clear, "best_similarity"] < threshold)).all()
    # --keep-flagged shows the flagged photos' predictions, still saying why they are doubtful.
    assert _classify(library, "--images", str(REAL_IMAGES), "--k", "3", "--out", str(out), "--keep-flagged") == 0
    kept = pd.read_csv(out)
    assert (kept["evidence"] == "image").all() and kept["species_vote_share"].notna().all()
    assert kept.loc[flagged.to_numpy(), "quality"].isin(["empty_well", "blurry"]).all()


@needs_shared_data
def test_classify_real_barcodes_quality_rows_in_table_and_json(library, tmp_path, capsys) -> None:
    subset = pd.read_csv(BOLD_4K, sep="\t", dtype=str).iloc[100:125]
    subset.loc[subset.index[3], "nucleotides"] = "NNNN---"
    subset.loc[subset.index[7], "nucleotides"] = "acgtNNNN----RYKM   acgt"
    path = tmp_path / "barcodes.tsv"
    subset.to_csv(path, sep="\t", index=False)
    args = ["--dna", str(path)]
    assert _classify(library, *args, "--format", "table") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == COLUMNS and len(lines) == 1 + 25
    assert "too_short (0 valid nt < 200)" in lines[1 + 3]
    assert "too_short (8 valid nt < 200); too_ambiguous (50.0% N or ambiguity codes > 5.0%)" in lines[1 + 7]
    assert _classify(library, *args, "--format", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == subset["processid"].tolist()
    assert [r["dna_record"] for r in rows] == list(range(1, 26)) and {r["dna_file"] for r in rows} == {str(path)}
    bad = {
        3: "too_short (0 valid nt < 200)",
        7: "too_short (8 valid nt < 200); too_ambiguous (50.0% N or ambiguity codes > 5.0%)",
    }
    for i, row in enumerate(rows):
        assert row["quality"] == bad.get(i, "")
        assert row["evidence"] == ("" if i in bad else "dna")
        assert (row["species_vote_share"] is None) == (i in bad)
        assert (row["possible_new_species"] is None) == (i in bad)
    # Looser minimums let the 8-base record through (its ambiguity share alone still refuses it).
    assert _classify(library, *args, "--format", "json", "--min-valid-nt", "4") == 0
    assert json.loads(capsys.readouterr().out)[7]["quality"] == "too_ambiguous (50.0% N or ambiguity codes > 5.0%)"


@needs_shared_data
def test_classify_duplicate_ids_are_an_error_naming_them(library, tmp_path, capsys) -> None:
    fasta = tmp_path / "dup.fasta"
    fasta.write_text(">a\nACGT\n>b\nACGT\n>a\nACGT\n")
    out = tmp_path / "rows.csv"
    assert _classify(library, "--dna", str(fasta), "--out", str(out)) == 1
    message = f"clibd classify: 1 duplicate barcode ids, each must name one specimen: 'a' ({fasta}:1, {fasta}:3)"
    assert message in capsys.readouterr().err and not out.exists()  # nothing written
    # across chunks too: the first chunk was classified, yet --out stays unwritten
    assert _classify(library, "--dna", str(fasta), "--out", str(out), "--chunk", "2") == 1
    assert message in capsys.readouterr().err and not out.exists()


@needs_shared_data
def test_classify_photo_and_barcode_together_by_id(library, tmp_path) -> None:
    import shutil

    bold = pd.read_csv(BOLD_4K, sep="\t", dtype=str)
    photos = tmp_path / "photos"
    photos.mkdir()
    valid = sorted(REAL_IMAGES.glob("valid_*.jpg"))
    for name, source in [("A", valid[0]), ("B", valid[1]), ("C", valid[2]), ("E", next(REAL_IMAGES.glob("blurry_*")))]:
        shutil.copy(source, photos / f"{name}.jpg")
    fasta = tmp_path / "new.fasta"
    seqs = bold["nucleotides"]
    fasta.write_text(f">B\n{seqs[0]}\n>C\nACGTACGT\n>D\n{seqs[1]}\n>E\n{seqs[2]}\n")
    out = tmp_path / "pred.csv"
    assert _classify(library, "--images", str(photos), "--dna", str(fasta), "--out", str(out)) == 0
    table = pd.read_csv(out, keep_default_na=False, na_values=[""]).set_index("id")
    assert table.index.tolist() == ["A", "B", "C", "E", "D"]  # photos' order, then barcodes without a photo
    assert table["evidence"].tolist() == ["image", "image+dna", "image", "dna", "dna"]
    assert table["quality"].fillna("").tolist() == ["", "", "dna: too_short (8 valid nt < 200)", "image: blurry", ""]
    assert table["dna_record"].fillna(0).astype(int).tolist() == [0, 1, 2, 4, 3]
    assert table["image_file"].fillna("").tolist() == [str(photos / f"{n}.jpg") for n in "ABCE"] + [""]
    assert table["species_vote_share"].notna().all()  # a vote for every row (names may be withheld)


@needs_shared_data
def test_classify_refuses_an_index_of_another_checkpoint(library, tmp_path) -> None:
    from clibd.index.faiss_index import IndexMismatchError
    from tests.helpers.real_table import real_run

    other = real_run(tmp_path, seed=1)
    with pytest.raises(IndexMismatchError, match="rebuild the index"):
        _classify((other, library[1]), "--dna", str(BOLD_4K), "--debug")
