"""Outputs written whole or not at all (clibd.atomic): manifests checked by their readers, one
writer per output, no output over something else; ``clibd embed``'s files; FASTA and table
blocks that cost a bad record only."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from clibd.atomic import (
    OutputError,
    atomic_file,
    atomic_output,
    check_replaceable,
    output_lock,
    verify_manifest,
    write_manifest,
)
from clibd.data.sources.delimited import iter_table
from clibd.data.sources.fasta import iter_fasta, parse_fasta, read_fasta


def test_a_manifest_names_the_file_that_differs(tmp_path) -> None:
    for name, text in (("a.txt", "one"), ("b.txt", "two")):
        (tmp_path / name).write_text(text)
    write_manifest(tmp_path, "thing", ["a.txt", "b.txt"], checkpoint_hash="abc")
    manifest = verify_manifest(tmp_path, "thing", "thing")
    assert manifest["checkpoint_hash"] == "abc" and manifest["files"]["a.txt"]["bytes"] == 3
    (tmp_path / "b.txt").write_text("TWO")  # same size, other bytes: another write's file
    with pytest.raises(OutputError, match=rf"{tmp_path / 'b.txt'}: cannot be read: it is not the file the thing's"):
        verify_manifest(tmp_path, "thing", "thing")
    (tmp_path / "b.txt").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'b.txt'}: missing from the thing"):
        verify_manifest(tmp_path, "thing", "thing")
    with pytest.raises(OutputError, match="its manifest.json says it holds a 'thing', not a library"):
        verify_manifest(tmp_path, "library", "library")
    (tmp_path / "manifest.json").write_text("{half a manif")
    with pytest.raises(OutputError, match="no readable manifest.json: this thing was not written whole"):
        verify_manifest(tmp_path, "thing", "thing")


def test_large_files_are_checked_by_size_and_sampled_blocks(tmp_path) -> None:
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8)
    (tmp_path / "big.bin").write_bytes(data.tobytes())
    write_manifest(tmp_path, "big", ["big.bin"])
    flipped = data.copy()
    flipped[0] ^= 1  # in the first MiB: sampled
    (tmp_path / "big.bin").write_bytes(flipped.tobytes())
    with pytest.raises(OutputError, match="big.bin: cannot be read"):
        verify_manifest(tmp_path, "big", "big", full_check_bytes=1 << 20)
    with pytest.raises(OutputError, match="big.bin: cannot be read"):
        verify_manifest(tmp_path, "big", "big", full_check_bytes=None)


def test_one_writer_at_a_time(tmp_path) -> None:
    target = tmp_path / "out"
    with output_lock(target):
        with pytest.raises(OutputError, match=rf"{target} is being written by process {os.getpid()}: wait for it"):
            with output_lock(target):
                pass
    with output_lock(target):  # released: free again
        pass


def test_an_out_holding_something_else_is_refused(tmp_path) -> None:
    folder, file = tmp_path / "folder", tmp_path / "file.csv"
    folder.mkdir()
    (folder / "mine.txt").write_text("x")
    file.write_text("not ours")
    with pytest.raises(
        OutputError, match=rf"--out {folder} exists and is not an earlier output of cmd \(it holds mine.txt\)"
    ):
        check_replaceable(folder, "kind", "cmd")
    with pytest.raises(OutputError, match=rf"--out {file} is a file; cmd writes a folder"):
        check_replaceable(file, "kind", "cmd")
    with pytest.raises(OutputError, match=rf"--out {folder} is a folder; cmd writes a file"):
        check_replaceable(folder, "", "cmd", lambda p: True, folder=False)
    with pytest.raises(OutputError, match=rf"--out {file} exists and is not an earlier output of cmd;"):
        check_replaceable(file, "", "cmd", lambda p: False, folder=False)
    check_replaceable(file, "", "cmd", lambda p: True, folder=False)  # an earlier output: replaced
    with atomic_output(tmp_path / "done", "kind", "cmd") as tmp:
        (tmp / "result.txt").write_text("1")
    assert json.loads((tmp_path / "done" / "manifest.json").read_text())["files"].keys() == {"result.txt"}
    check_replaceable(tmp_path / "done", "kind", "cmd")  # its own kind: may be replaced


def test_a_failed_file_write_leaves_the_old_file(tmp_path) -> None:
    target = tmp_path / "rows.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]


def _records(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [f"s{i}" for i in range(n)], "file": "in.fasta", "record": range(1, n + 1), "quality": ""}
    ).astype({"record": "Int64"})


def test_embedding_files_parquet_keeps_every_row_npy_the_embedded_ones(tmp_path) -> None:
    from clibd.embed.embedding_files import EmbeddingWriter, is_embed_output, read_embeddings

    emb = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    keep = np.array([True, False, True, True, False])
    records = _records(5).assign(quality=["", "too_short (3 valid nt < 200)", "", "", "unreadable (x)"])
    for name in ("e.parquet", "e.npy"):
        with EmbeddingWriter(tmp_path / name, 4, "hash") as writer:
            writer.write(records.iloc[:3], emb[:3], keep[:3])
            writer.write(records.iloc[3:], emb[3:], keep[3:])
        assert is_embed_output(tmp_path / name)
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert (
        table["id"].tolist() == [f"s{i}" for i in range(5)]
        and table["quality"].tolist()[1] == "too_short (3 valid nt < 200)"
    )
    assert table["embedding"].isna().tolist() == [False, True, False, False, True]
    np.testing.assert_array_equal(np.stack(table["embedding"][keep].to_numpy()), emb[keep])
    array, ids = read_embeddings(tmp_path / "e.npy")
    np.testing.assert_array_equal(array, emb[keep])
    assert ids == ["s0", "s2", "s3"] and (tmp_path / "e.ids.txt").read_text() == "s0\ns2\ns3\n"
    (tmp_path / "e.ids.txt").write_text("s0\ns2\nother\n")  # a kill between the renames: another write's ids
    with pytest.raises(OutputError, match="e.ids.txt: cannot be read"):
        read_embeddings(tmp_path / "e.npy")
    with pytest.raises(ValueError, match="boom"):  # a failed write leaves nothing behind
        with EmbeddingWriter(tmp_path / "f.npy", 4, None) as writer:
            writer.write(records, emb, keep)
            raise ValueError("boom")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".f", "f."))]


def test_fasta_blocks_cost_a_bad_record_only(tmp_path) -> None:
    raw = b">a x\nAC\nGT\n>b|s|o\nA\xffC\n>c|1|2|3|4|5|6|7\nAA\n>d\r\nTT\r\n"
    with pytest.raises(ValueError, match=r"x\.fa: line 5: not UTF-8 text"):
        parse_fasta(raw, "x.fa")  # a dataset's FASTA: the whole file is refused naming the line
    marked = parse_fasta(raw, "x.fa", mark_bad=True)
    assert marked["processid"].tolist() == ["a", "b", "c", "d"]
    assert marked["dna_barcode"].fillna("").tolist() == ["ACGT", "", "", "TT"]
    assert marked["problem"].tolist()[1:3] == [
        "line 5: not UTF-8 text (byte 0xff)",
        "line 6: header has more than 6 '|'-separated fields",
    ]
    path = tmp_path / "x.fa"
    path.write_bytes(b"\xef\xbb\xbf\n" + raw * 50)
    whole = parse_fasta(path.read_bytes(), str(path), mark_bad=True)
    for block in (8, 64, 1 << 20):  # any block size: the same records, the same line numbers
        blocks = pd.concat(list(iter_fasta(path, block)), ignore_index=True)
        pd.testing.assert_frame_equal(blocks, whole)
    assert whole["problem"].dropna().iloc[-1] == f"line {1 + 49 * 9 + 6}: header has more than 6 '|'-separated fields"
    with pytest.raises(ValueError, match=r"x\.fa: line 6: not UTF-8 text"):
        read_fasta(path)  # a dataset read whole: refused naming the first bad line


def test_table_blocks_cost_a_bad_row_only(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbfid,seq\na,ACGT\nb,AC,GT\nc,A\xffC\n\nd,TT\n")
    table = pd.concat(list(iter_table(path, ["id", "seq"])), ignore_index=True)
    assert table["id"].tolist() == ["a", "c", "d", ""] and table["seq"].tolist() == ["ACGT", "", "TT", ""]
    assert table["problem"].fillna("").tolist() == [
        "",
        "column 'seq' is not UTF-8 text",
        "",
        "line 3: expected 2 fields, found 3",
    ]
    unterminated = tmp_path / "u.csv"
    unterminated.write_text('id,seq\na,"ACGT\nb,TT\n')  # b is swallowed by a's cell: a says so
    [table] = iter_table(unterminated, ["id", "seq"])
    assert table["problem"].tolist() == [
        "a quoted cell runs over the end of its line (an unterminated quote?): the next lines may be in it"
    ]
