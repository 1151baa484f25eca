"""Readers of the real dataset layouts: BIOSCAN-5M root, BIOSCAN-1M root, CLIBD HDF5, CSV/TSV, FASTA."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from clibd.config import DataConfig, SplitRoles
from clibd.data.images import read_image_bytes
from clibd.data.roles import select_role
from clibd.data.sources import read_specimens
from clibd.data.sources.fasta import read_fasta, write_fasta
from clibd.data.sources.hdf5 import (
    BIOSCAN1M_GROUPS,
    BIOSCAN5M_GROUPS,
    BIOSCAN5M_HDF5_ROLES,
    read_clibd_hdf5,
    write_clibd_hdf5,
)
from clibd.data.specimens import SPECIMEN_COLUMNS
from tests.data_paths import BOLD_4K, BOLD_NL, needs_shared_data
from tests.helpers.bioscan_root import CLIBD_1M_SPLITS, image_path_5m, make_bioscan1m_root, make_bioscan5m_root

# The published 5M HDF5 groups, each specimen's split named by the smallest group holding it.
HDF5_SPLIT_OF = {
    "pretrain": "no_split_and_seen_train", "train": "seen_keys", "val": "val_seen", "test": "test_seen",
    "key_unseen": "unseen_keys", "val_unseen": "val_unseen", "test_unseen": "test_unseen",
    "other_heldout": "other_heldout",
}  # fmt: skip
ROLES_1M = SplitRoles(
    train=["no_split", "train_seen"],
    keys=["train_seen", "test_unseen_keys"],
    test_seen=["test_seen"],
    test_unseen=["test_unseen"],
    val_seen=["val_seen"],
    val_unseen=["val_unseen"],
    unused=["single_species"],
)


@pytest.fixture
def root5m(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    return tmp_path, make_bioscan5m_root(tmp_path)


def _read5m(root: Path, **kw) -> pd.DataFrame:
    table, report = read_specimens(DataConfig(format="bioscan5m", root=str(root), **kw))
    assert report.skipped == 0
    return table


def _same_specimens(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same processids, ranks, BINs and barcodes; images byte-identical through read_image_bytes."""
    a, b = a.set_index("processid").sort_index(), b.set_index("processid").sort_index()
    assert list(a.index) == list(b.index)
    for col in ("order", "family", "genus", "species", "dna_bin", "dna_barcode"):
        pd.testing.assert_series_equal(a[col], b[col], check_names=False)
    assert [read_image_bytes(r) for r in a["image_ref"]] == [read_image_bytes(r) for r in b["image_ref"]]


def test_bioscan5m_table_columns_dtypes_and_chunk_paths(root5m):
    root, meta = root5m
    table = _read5m(root)
    assert list(table.columns[: len(SPECIMEN_COLUMNS)]) == list(SPECIMEN_COLUMNS)
    assert table["split"].value_counts().to_dict() == meta["split"].value_counts().to_dict()
    assert str(table["species"].dtype) == "string" and str(table["coord-lat"].dtype) == "float64"
    assert str(table["inferred_ranks"].dtype) == "UInt8" and str(table["index_bioscan_1M_insect"].dtype) == "Int64"
    assert table["index_bioscan_1M_insect"].isna().sum() == 7
    # empty CSV cells are <NA>, never ""
    assert table["species"].isna().sum() == 3 and not table["species"].eq("").any()
    refs = dict(zip(table["processid"], table["image_ref"]))
    base = str(root.resolve() / "bioscan5m" / "images" / "cropped_256")
    assert refs["AACTA1040-20"] == f"{base}/pretrain/00/AACTA1040-20.jpg"  # md5 prefix, 2 chars
    assert refs["YGEN686-22"] == f"{base}/pretrain/ff/YGEN686-22.jpg"
    assert refs["AACTA1026-20"] == f"{base}/train/0/AACTA1026-20.jpg"  # 1 char
    assert refs["ABSSI1639-22"] == f"{base}/other_heldout/0/ABSSI1639-22.jpg"
    assert refs["AACTA161-20"] == f"{base}/val/AACTA161-20.jpg"  # no sub-folder
    assert refs["BCMIN4148-23"] == f"{base}/test_unseen/BCMIN4148-23.jpg"
    assert all(Path(r).is_file() for r in table["image_ref"])


def test_bioscan5m_empty_chunk_column_is_computed_and_root_may_be_the_bioscan5m_folder(tmp_path):
    make_bioscan5m_root(tmp_path, chunk_column=False)
    table = _read5m(tmp_path / "bioscan5m")
    expected = [str(image_path_5m(tmp_path.resolve(), p, s)) for p, s in zip(table["processid"], table["split"])]
    assert table["image_ref"].tolist() == expected
    assert table.set_index("processid").loc["YGEN686-22", "chunk"] == "ff"


def test_bioscan5m_chunk_column_disagreeing_with_md5_rule_is_an_error(tmp_path):
    meta = make_bioscan5m_root(tmp_path)
    meta.loc[meta["processid"] == "YGEN986-22", "chunk"] = "3"
    make_bioscan5m_root(tmp_path, meta)
    with pytest.raises(
        ValueError, match=r"'YGEN986-22' \(row 4\): chunk column '3' disagrees .* 'train' \(md5 prefix 'f'\)"
    ):
        _read5m(tmp_path)


def test_wrong_root_missing_image_package_and_missing_column_name_what_is_expected(root5m, tmp_path):
    root, meta = root5m
    with pytest.raises(
        FileNotFoundError, match=r"expected .*nowhere/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata\.csv"
    ):
        read_specimens(DataConfig(format="bioscan5m", root=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match=r"expected the folder .*bioscan5m/images/original_full"):
        read_specimens(DataConfig(format="bioscan5m", root=str(root), image_package="original_full"))
    # without images wanted, the image folder is not required
    table, _ = read_specimens(
        DataConfig(format="bioscan5m", root=str(root), image_package="original_full"), require_image=False
    )
    assert len(table) == len(meta)
    make_bioscan5m_root(root, meta.drop(columns=["dna_barcode"]))
    with pytest.raises(ValueError, match=r"BIOSCAN_5M_Insect_Dataset_metadata\.csv: missing column 'dna_barcode'"):
        read_specimens(DataConfig(format="bioscan5m", root=str(root)))
    with pytest.raises(FileNotFoundError, match=r"CLIBD HDF5 file not found: .*missing\.h5"):
        read_specimens(DataConfig(format="hdf5", root=str(tmp_path / "missing.h5")))
    with pytest.raises(FileNotFoundError, match=r"table file not found: .*missing\.tsv"):
        read_specimens(DataConfig(format="tabular", root=str(tmp_path / "missing.tsv")))
    with pytest.raises(FileNotFoundError, match=r"FASTA file not found: .*missing\.fa"):
        read_specimens(DataConfig(format="fasta", root=str(tmp_path / "missing.fa")))
    with pytest.raises(ValueError, match=r"data.format must be one of .* got 'bioscan6m'"):
        read_specimens(DataConfig(format="bioscan6m", root=str(root)))


def test_bioscan_dataset_package_reads_the_same_root(root5m, monkeypatch):
    bioscan5m = pytest.importorskip("bioscan_dataset.bioscan5m")
    root, meta = root5m
    # The package verifies the real release's md5 sums; a tiny root can only match its layout.
    monkeypatch.setattr(bioscan5m, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    ds = bioscan5m.BIOSCAN5M(str(root), split="train", modality=("image", "dna"))
    ours = _read5m(root).set_index("processid")
    assert len(ds) == 2
    for i in range(len(ds)):
        pid = ds.metadata["processid"].iloc[i]
        image, dna, _ = ds[i]
        assert Path(ds.image_dir, ds.metadata["image_path"].iloc[i]) == Path(ours.loc[pid, "image_ref"])
        assert np.array_equal(
            np.asarray(image), np.asarray(__import__("PIL.Image").Image.open(ours.loc[pid, "image_ref"]))
        )
        assert dna == ours.loc[pid, "dna_barcode"]
    everything = bioscan5m.load_bioscan5m_metadata(ds.metadata_path, split="all")
    paths = [str(Path(ds.image_dir, p)) for p in everything["image_path"]]
    assert paths == ours.loc[everything["processid"], "image_ref"].tolist()


def test_hdf5_written_in_published_layout(root5m, tmp_path):
    root, _ = root5m
    table = _read5m(root)
    h5 = tmp_path / "clibd.h5"
    written = write_clibd_hdf5(table, h5)
    assert written["missing_images"] == []
    with h5py.File(h5) as f:
        assert sorted(f) == sorted(BIOSCAN5M_GROUPS)
        g = f["all_keys"]
        assert sorted(x.decode() for x in g["processid"][()]) == sorted(
            table.loc[table["split"].isin(["train", "key_unseen"]), "processid"]
        )
        assert g["image"].dtype == np.uint8 and g["image"].ndim == 2
        n = int(g["image_mask"][0])
        assert g["image"][0, :n].tobytes()[:2] == b"\xff\xd8" and not g["image"][0, n:].any()
        species = [s.decode() for s in f["no_split_and_seen_train"]["species"][()]]
        assert species.count("not_classified") == 3
        assert len(f["no_split_and_seen_train"]["barcode"]) == 5


def test_same_specimens_through_bioscan5m_hdf5_csv_and_bioscan1m(root5m, tmp_path):
    root, meta = root5m
    table = _read5m(root)
    h5 = tmp_path / "clibd.h5"
    write_clibd_hdf5(table, h5)
    from_h5, report = read_specimens(DataConfig(format="hdf5", root=str(h5), splits=BIOSCAN5M_HDF5_ROLES))
    assert report.skipped == 0
    assert from_h5["image_ref"].str.startswith(f"h5://{h5.resolve()}#").all()
    assert dict(zip(from_h5["processid"], from_h5["split"])) == {
        p: HDF5_SPLIT_OF[s] for p, s in zip(table["processid"], table["split"])
    }
    _same_specimens(table, from_h5)

    csv = tmp_path / "specimens.csv"
    table[list(SPECIMEN_COLUMNS)].to_csv(csv, index=False)
    from_csv, _ = read_specimens(DataConfig(format="tabular", root=str(csv)))
    _same_specimens(table, from_csv)
    pd.testing.assert_frame_equal(from_csv[list(SPECIMEN_COLUMNS)], table[list(SPECIMEN_COLUMNS)])

    make_bioscan1m_root(tmp_path / "one", meta)
    from_1m, _ = read_specimens(DataConfig(format="bioscan1m", root=str(tmp_path / "one"), splits=ROLES_1M))
    assert dict(zip(from_1m["processid"], from_1m["split"])) == {
        p: CLIBD_1M_SPLITS[s] for p, s in zip(table["processid"], table["split"])
    }
    _same_specimens(table, from_1m)
    assert from_1m["image_ref"].str.contains(r"/bioscan1m/images/cropped_256/part[123]/", regex=True).all()


def test_hdf5_groups_overlapping_without_nesting_are_an_error(root5m, tmp_path):
    table = _read5m(root5m[0])
    h5 = tmp_path / "bad.h5"
    write_clibd_hdf5(table, h5, groups={"a": ["train", "val"], "b": ["val", "test"], "c": ["test"]})
    with pytest.raises(ValueError, match=r"groups '(a|b)' and '(a|b)' overlap without one containing the other"):
        read_clibd_hdf5(h5)


def test_hdf5_missing_image_is_a_bad_record(root5m, tmp_path):
    table = _read5m(root5m[0])
    lost = table["processid"] == "AACTA161-20"
    table.loc[lost, "image_ref"] = str(tmp_path / "gone.jpg")
    h5 = tmp_path / "clibd.h5"
    assert write_clibd_hdf5(table, h5)["missing_images"] == ["AACTA161-20"]
    cfg = DataConfig(format="hdf5", root=str(h5), splits=BIOSCAN5M_HDF5_ROLES)
    with pytest.raises(ValueError, match=r"record 'AACTA161-20' \(row \d+\): no image"):
        read_specimens(cfg)
    cfg.bad_records = "skip"
    kept, report = read_specimens(cfg)
    assert len(kept) == len(table) - 1 and report.counts == {"missing image": 1}
    assert report.examples["missing image"] == ["AACTA161-20"]


def test_csv_with_bom_crlf_and_column_mapping(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbfid,nuc,sp,part\r\nP1,ACGT,Aus bus,train\r\nP2,GGCC,,test\r\n")
    cfg = DataConfig(
        format="tabular",
        root=str(path),
        columns={"processid": "id", "dna_barcode": "nuc", "species": "sp", "split": "part"},
    )
    cfg.required_ranks = []
    table, _ = read_specimens(cfg)
    assert table["processid"].tolist() == ["P1", "P2"]
    assert table["species"].tolist() == ["Aus bus", pd.NA] and table["split"].tolist() == ["train", "test"]
    assert table["image_ref"].isna().all()


def test_tabular_errors_name_line_column_and_file(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("processid\tnucleotides\tsplit\nP1\tACGT\ttrain\nP2\tACGT\nP3\tAC\ttest\n")
    with pytest.raises(ValueError, match=r"t\.tsv: line 3: expected 3 fields, found 2"):
        read_specimens(DataConfig(format="tabular", root=str(path), columns={"dna_barcode": "nucleotides"}))
    path.write_text("processid\tnucleotides\nP1\tACGT\n")
    with pytest.raises(ValueError, match=r"t\.tsv: missing column 'nuc'"):
        read_specimens(DataConfig(format="tabular", root=str(path), columns={"dna_barcode": "nuc"}))
    with pytest.raises(ValueError, match=r"unknown specimen column\(s\) \['speceis'\]"):
        read_specimens(DataConfig(format="tabular", root=str(path), columns={"speceis": "x"}))
    path.write_text("id\tnucleotides\nP1\tACGT\n")
    with pytest.raises(ValueError, match=r"t\.tsv: missing column 'processid'"):
        read_specimens(DataConfig(format="tabular", root=str(path)))
    with pytest.raises(ValueError, match=r"data.columns is used by formats"):
        read_specimens(DataConfig(format="fasta", root=str(path), columns={"processid": "id"}))


def test_parquet_and_unquoted_tsv(root5m, tmp_path):
    table = _read5m(root5m[0])
    table.to_parquet(tmp_path / "t.parquet")
    back, _ = read_specimens(DataConfig(format="tabular", root=str(tmp_path / "t.parquet")))
    pd.testing.assert_frame_equal(back[list(SPECIMEN_COLUMNS)], table[list(SPECIMEN_COLUMNS)])
    (tmp_path / "q.tsv").write_text('processid\tspecies\nP1\t"Aus bus\nP2\tA "b" c\n')
    quoted, _ = read_specimens(DataConfig(format="tabular", root=str(tmp_path / "q.tsv")))
    assert quoted["species"].tolist() == ['"Aus bus', 'A "b" c']


def test_tabular_relative_image_paths_resolve_beside_the_file(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"\xff\xd8abc")
    (tmp_path / "t.csv").write_text("processid,image_ref\nA,img/a.jpg\n")
    table, _ = read_specimens(DataConfig(format="tabular", root=str(tmp_path / "t.csv")))
    assert read_image_bytes(table["image_ref"].iat[0]) == b"\xff\xd8abc"


BOLD_4K_COLUMNS = {
    "phylum": "phylum_name", "class": "class_name", "order": "order_name", "family": "family_name",
    "genus": "genus_name", "species": "species_name", "dna_barcode": "nucleotides", "dna_bin": "bin_uri",
}  # fmt: skip


@needs_shared_data
def test_real_bold_tsvs_through_the_tabular_reader():
    table, report = read_specimens(DataConfig(format="tabular", root=str(BOLD_4K), columns=BOLD_4K_COLUMNS))
    assert len(table) == 4278 and report.skipped == 0
    assert table["order"].nunique() == 13 and table["family"].nunique() == 161
    assert table["genus"].nunique() == 500 and table["species"].nunique() == 1826
    assert table["processid"].is_unique and table["split"].isna().all()
    nl, _ = read_specimens(
        DataConfig(format="tabular", root=str(BOLD_NL), columns={"dna_barcode": "nuc", "dna_bin": "bin_uri"})
    )
    assert len(nl) == 515
    assert int(nl["dna_barcode"].str.contains("-", regex=False).sum()) == 56  # raw: gaps kept for the tokenizer
    assert int(nl["dna_barcode"].str.contains("[acgt]", regex=True).sum()) == 4


def test_fasta_round_trip_and_plain_headers(root5m, tmp_path):
    table = _read5m(root5m[0])
    path = tmp_path / "b.fasta"
    write_fasta(table, path)
    back, _ = read_specimens(DataConfig(format="fasta", root=str(path)), require_image=False)
    cols = ["processid", "split", "order", "family", "genus", "species", "dna_barcode"]
    pd.testing.assert_frame_equal(back[cols], table[cols])
    plain = tmp_path / "plain.fa"
    plain.write_bytes(b"\xef\xbb\xbf>P1 some description\r\nACGT\r\nacgn\r\n\r\n>P2\nGG CC\n")
    got = read_fasta(plain)
    assert got["processid"].tolist() == ["P1", "P2"] and got["dna_barcode"].tolist() == ["ACGTacgn", "GGCC"]
    assert got["split"].isna().all() and got["species"].isna().all()


def test_fasta_errors_name_the_line(tmp_path):
    path = tmp_path / "x.fa"
    path.write_text("ACGT\n>P1\nACGT\n")
    with pytest.raises(ValueError, match=r"x\.fa: line 1: expected a '>' header line"):
        read_fasta(path)
    path.write_text(">P1\nACGT\nAC\n>P2|a|b|c|d|e|f\nACGT\n")
    with pytest.raises(ValueError, match=r"x\.fa: line 4: header has more than 6"):
        read_fasta(path)
    path.write_text("")
    with pytest.raises(ValueError, match=r"x\.fa: no FASTA records"):
        read_fasta(path)


def test_bioscan1m_wrong_root_and_split_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected .*bioscan1m/BIOSCAN_Insect_Dataset_metadata\.tsv"):
        read_specimens(DataConfig(format="bioscan1m", root=str(tmp_path)))
    make_bioscan1m_root(tmp_path)
    # A TSV column may be the split instead of the CLIBD partition files.
    table, _ = read_specimens(
        DataConfig(
            format="bioscan1m",
            root=str(tmp_path),
            columns={"split": "large_diptera_family"},
            splits=SplitRoles(train=["train"], keys=[]),
        )
    )
    assert table["split"].eq("train").all() and table["order"].notna().all()
    assert table["species"].isna().sum() == 3  # "not_classified" is unknown


def test_bioscan1m_hdf5_layout_without_processid_reads_ids_from_sampleid(tmp_path):
    make_bioscan1m_root(tmp_path)
    table, _ = read_specimens(DataConfig(format="bioscan1m", root=str(tmp_path), splits=ROLES_1M))
    h5 = tmp_path / "BioScan_data_in_splits.hdf5"
    write_clibd_hdf5(table, h5, groups=BIOSCAN1M_GROUPS)
    with h5py.File(h5, "a") as f:  # the published 1M file has no processid dataset
        for g in f.values():
            del g["processid"]
    roles = SplitRoles(  # as configs/bioscan1m/*.yaml
        train=["no_split", "train_seen"], keys=["seen_keys", "val_unseen_keys", "test_unseen_keys"],
        test_seen=["test_seen"], test_unseen=["test_unseen"], val_seen=["val_seen"], val_unseen=["val_unseen"],
        unused=["single_species"],
    )  # fmt: skip
    back, report = read_specimens(DataConfig(format="hdf5", root=str(h5), splits=roles))
    assert report.skipped == 0
    assert sorted(back["processid"]) == sorted(table["sampleid"])
    # all_keys (a union group) ties with test_unseen_keys here: the non-union group names the split
    assert dict(zip(back["processid"], back["split"])) == dict(zip(table["sampleid"], table["split"]))
    assert len(select_role(back, roles, "train")) == 5 and len(select_role(back, roles, "keys")) == 1
