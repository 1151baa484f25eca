"""Specimen-table normalisation, bad-record policy, roles, image refs and the skip report."""

from __future__ import annotations

import multiprocessing

import pandas as pd
import pytest

from clibd.config import DataConfig, SplitRoles
from clibd.data.bad_records import SkipReport
from clibd.data.images import ImageReadError, read_image_bytes
from clibd.data.roles import ROLE_NAMES, select_role
from clibd.data.sources import read_specimens
from clibd.data.sources.hdf5 import write_clibd_hdf5
from clibd.data.specimens import SPECIMEN_COLUMNS, normalise_table, validate_table
from tests.helpers.bioscan_root import make_bioscan5m_root, tiny_jpeg

RANKS4 = ("order", "family", "genus", "species")


def _table(**changes) -> pd.DataFrame:
    """Four good rows (pretrain without labels, train, test, test_unseen); ``changes`` = {column: {row: value}}."""
    rows = pd.DataFrame(
        {
            "processid": ["P0", "P1", "P2", "P3"],
            "split": ["pretrain", "train", "test", "test_unseen"],
            "order": ["Diptera"] * 4,
            "family": [None, "Sciaridae", "Sciaridae", "Sciaridae"],
            "genus": [None, "Bradysia", "Bradysia", "Bradysia"],
            "species": [None, "Bradysia praecox", "Bradysia praecox", "Bradysia sp. 3"],
            "dna_barcode": ["ACGTN", "ACGT", "AACC", "GGTT"],
            "image_ref": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
        }
    )
    for column, values in changes.items():
        for row, value in values.items():
            rows.loc[row, column] = value
    return normalise_table(rows)


def _validate(table: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, SkipReport]:
    return validate_table(
        table, "src.csv", policy, roles=SplitRoles(), required_ranks=RANKS4, require_dna=True, require_image=True
    )


BAD_CASES = [
    # (changes, reason counted under skip, example id reported, message under error)
    (
        {"processid": {2: "P1"}},
        "duplicate processid",
        "P1",
        r"record 'P1' \(row 2\): duplicate processid \(first at row 1\)",
    ),
    ({"processid": {3: ""}}, "missing processid", "<no processid>", r"record <NA> \(row 3\): no processid"),
    (
        {"split": {2: "tset"}},
        "unknown split",
        "P2",
        r"record 'P2' \(row 2\): split 'tset' is not one of the configured splits",
    ),
    ({"split": {1: " "}}, "unknown split", "P1", r"record 'P1' \(row 1\): no split"),
    (
        {"species": {3: ""}},
        "missing species label",
        "P3",
        r"record 'P3' \(row 3\): no species label, required on split 'test_unseen'",
    ),
    (
        {"family": {1: None}},
        "missing family label",
        "P1",
        r"record 'P1' \(row 1\): no family label, required on split 'train'",
    ),
    ({"dna_barcode": {2: "NNNN-nn"}}, "empty or all-N barcode", "P2", r"record 'P2' \(row 2\): barcode is all N"),
    ({"dna_barcode": {1: ""}}, "empty or all-N barcode", "P1", r"record 'P1' \(row 1\): empty barcode"),
    ({"image_ref": {3: None}}, "missing image", "P3", r"record 'P3' \(row 3\): no image"),
]


@pytest.mark.parametrize("changes,reason,example,message", BAD_CASES)
def test_each_bad_record_errors_naming_it_or_is_a_counted_skip(changes, reason, example, message):
    table = _table(**changes)
    with pytest.raises(ValueError, match=rf"^src\.csv: {message}"):
        _validate(table, "error")
    kept, report = _validate(table, "skip")
    assert len(kept) == 3 and report.read == 4
    assert report.counts == {reason: 1}
    assert report.examples[reason] == [example]
    assert kept["processid"].is_unique and kept["processid"].notna().all()


def test_good_table_passes_and_pretrain_needs_no_labels():
    kept, report = _validate(_table(), "error")
    assert len(kept) == 4 and report.skipped == 0 and report.summary() == "no records skipped (4 read)"


def test_checks_follow_their_flags():
    table = _table(dna_barcode={1: "NNN"}, image_ref={2: None}, species={3: None}, split={0: "elsewhere"})
    kept, report = validate_table(table, "src", "error")  # no roles, no modality required
    assert len(kept) == 4 and report.skipped == 0
    # a table without any split names (e.g. a FASTA of new specimens) skips the split checks
    _, report = validate_table(
        _table(split={0: None, 1: None, 2: None, 3: None}), "src", "error", roles=SplitRoles(), required_ranks=RANKS4
    )
    assert report.skipped == 0


def test_error_names_the_first_bad_row_and_counts_the_rest():
    table = _table(dna_barcode={3: ""}, split={1: "nope"}, species={2: None})
    with pytest.raises(ValueError, match=r"record 'P1' \(row 1\): split 'nope' .*; 2 more bad record\(s\)\."):
        _validate(table, "error")
    kept, report = _validate(table, "skip")
    assert kept["processid"].tolist() == ["P0"]
    assert report.counts == {"unknown split": 1, "missing species label": 1, "empty or all-N barcode": 1}
    assert report.summary().startswith("skipped 3 of 4 records: ")


def test_unknown_policy_and_unknown_required_rank_are_errors():
    with pytest.raises(ValueError, match=r"data.bad_records must be one of \('error', 'skip'\), got 'drop'"):
        _validate(_table(), "drop")
    with pytest.raises(ValueError, match=r"data.required_ranks names 'kingdom'"):
        validate_table(_table(), "src", "skip", roles=SplitRoles(), required_ranks=["kingdom"])


def test_normalise_empty_strings_whitespace_and_not_classified_to_na():
    raw = pd.DataFrame({"processid": [" P1 ", "P2"], "genus": ["not_classified", "  "], "note": ["", "x"], "n": [1, 2]})
    table = normalise_table(raw)
    assert list(table.columns) == [*SPECIMEN_COLUMNS, "note", "n"]
    assert table["processid"].tolist() == ["P1", "P2"]
    assert table["genus"].isna().all() and table["note"].isna().tolist() == [True, False]
    assert all(str(table[c].dtype) == "string" for c in SPECIMEN_COLUMNS) and table["n"].tolist() == [1, 2]


def test_read_specimens_applies_the_policy_from_config(tmp_path):
    meta = make_bioscan5m_root(tmp_path)
    meta.loc[meta["processid"] == "AACTA161-20", "dna_barcode"] = "NNNNNNNN"
    meta.loc[meta["processid"] == "YGEN995-22", "split"] = "holdout"
    make_bioscan5m_root(tmp_path, meta)
    with pytest.raises(ValueError, match=r"record 'AACTA161-20' \(row 5\): barcode is all N; 1 more bad record"):
        read_specimens(DataConfig(root=str(tmp_path)))
    table, report = read_specimens(DataConfig(root=str(tmp_path), bad_records="skip"))
    assert len(table) == 12 and report.counts == {"empty or all-N barcode": 1, "unknown split": 1}
    table, report = read_specimens(DataConfig(root=str(tmp_path), bad_records="skip"), require_dna=False)
    assert report.counts == {"unknown split": 1}


def test_bioscan5m_roles():
    table = _table(split={0: "pretrain", 1: "train", 2: "key_unseen", 3: "other_heldout"})
    roles = SplitRoles()
    assert select_role(table, roles, "train")["processid"].tolist() == ["P0", "P1"]
    assert select_role(table, roles, "keys")["processid"].tolist() == ["P1", "P2"]
    assert select_role(table, roles, "test_seen").empty
    assert select_role(table, roles, "keys").index.tolist() == [0, 1]
    assert ROLE_NAMES == ("train", "keys", "test_seen", "test_unseen", "val_seen", "val_unseen")


def test_roles_work_with_any_split_names():
    table = _table(split={0: "no_split", 1: "seen_keys", 2: "test_seen", 3: "val_unseen_keys"})
    roles = SplitRoles(train=["no_split"], keys=["seen_keys", "val_unseen_keys"], test_seen=["test_seen"])
    assert select_role(table, roles, "keys")["processid"].tolist() == ["P1", "P3"]
    assert select_role(table, roles, "test_seen")["processid"].tolist() == ["P2"]
    with pytest.raises(ValueError, match=r"unknown role 'test'; roles are \['train', 'keys'"):
        select_role(table, roles, "test")
    with pytest.raises(ValueError, match=r"the table carries no split names"):
        select_role(_table(split={i: None for i in range(4)}), roles, "train")


def test_read_image_bytes_errors_name_the_ref(tmp_path):
    with pytest.raises(ImageReadError, match=r"cannot read image .*nothing\.jpg: No such file"):
        read_image_bytes(str(tmp_path / "nothing.jpg"))
    with pytest.raises(ImageReadError, match=r"malformed HDF5 image ref 'h5://x.h5#grp'"):
        read_image_bytes("h5://x.h5#grp")
    with pytest.raises(ImageReadError, match=r"no image ref"):
        read_image_bytes(None)  # type: ignore[arg-type]


def _read_in_child(ref: str) -> bytes:
    return read_image_bytes(ref)


def test_h5_refs_read_in_parent_and_in_forked_workers(tmp_path):
    (tmp_path / "a.jpg").write_bytes(tiny_jpeg(1))
    table = normalise_table(
        pd.DataFrame({"processid": ["A", "B"], "split": ["test", "test"], "image_ref": [str(tmp_path / "a.jpg"), None]})
    )
    h5 = tmp_path / "x.h5"
    write_clibd_hdf5(table, h5, groups={"test_seen": ["test"]})
    ref = f"h5://{h5}#test_seen/0"
    assert read_image_bytes(ref) == tiny_jpeg(1)  # opens and caches the file in this process
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map(_read_in_child, [ref, ref]) == [tiny_jpeg(1)] * 2
    with pytest.raises(ImageReadError, match=r"#test_seen/1: no image stored \(image_mask is 0\)"):
        read_image_bytes(f"h5://{h5}#test_seen/1")
    with pytest.raises(ImageReadError, match=r"#test_seen/7"):
        read_image_bytes(f"h5://{h5}#test_seen/7")


def test_skip_report_add_merge_summary():
    a = SkipReport(read=10)
    a.add("missing image", ["A", "B"])
    a.add("missing image", [])
    b = SkipReport(read=5)
    b.add("missing image", [f"X{i}" for i in range(6)])
    b.add("unknown split", ["S"])
    both = a.merge(b)
    assert both.read == 15 and both.skipped == 9
    assert both.counts == {"missing image": 8, "unknown split": 1}
    assert both.examples["missing image"] == ["A", "B", "X0", "X1", "X2"]
    assert (
        both.summary() == "skipped 9 of 15 records: 8 missing image (e.g. A, B, X0, X1, X2); 1 unknown split (e.g. S)"
    )
    assert a.counts == {"missing image": 2}  # merge leaves its inputs alone
