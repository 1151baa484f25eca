"""New specimens a chunk at a time (``clibd.embed.inputs.specimen_chunks``, ``clibd classify``):
the rows do not depend on the chunk size, memory does not grow with the input, and every input
file or record gets exactly one row: a bad byte costs its FASTA record, a bad file its one row,
any image format PIL opens is read (an animation's first frame, upright by its EXIF tag)."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clibd.cli import main
from tests.data_paths import BOLD_4K, REAL_IMAGES, needs_shared_data

pytestmark = needs_shared_data


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    from tests.helpers.real_table import real_library

    return real_library(tmp_path_factory.mktemp("streaming"))


@pytest.fixture(scope="module")
def bold() -> pd.DataFrame:
    return pd.read_csv(BOLD_4K, sep="\t", dtype=str)


def _classify(library, *args: str) -> int:
    checkpoint, index = library
    return main(["classify", "--checkpoint", str(checkpoint), "--index", str(index), *args])


def _fasta(records: pd.DataFrame) -> str:
    return "".join(f">{p}\n{s}\n" for p, s in zip(records["processid"], records["nucleotides"]))


def test_rows_do_not_depend_on_the_chunk_size(library, bold, tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    valid = sorted(REAL_IMAGES.glob("valid_*.jpg"))[:9]
    records = bold.iloc[:40].copy()
    for i, photo in enumerate(valid):  # photos named after barcodes: fused rows, across chunks
        (photos / f"{records['processid'].iat[3 * i]}.jpg").write_bytes(photo.read_bytes())
    (tmp_path / "a.fasta").write_text(_fasta(records.iloc[:25]))
    (tmp_path / "b.fasta").write_text(_fasta(records.iloc[25:]))
    outputs = {}
    for chunk in (3, 7, 4096):
        for fmt in ("csv", "json"):
            out = tmp_path / f"{chunk}.{fmt}"
            inputs = ["--images", str(photos), "--dna", str(tmp_path / "a.fasta"), str(tmp_path / "b.fasta")]
            assert _classify(library, *inputs, "--chunk", str(chunk), "--format", fmt, "--out", str(out)) == 0
            outputs[chunk, fmt] = out.read_text()
    one = pd.read_csv(io.StringIO(outputs[4096, "csv"]))
    assert len(one) == 40 and one["id"].tolist()[:9] == sorted(records["processid"].iloc[0:27:3])  # photos first
    assert (one["evidence"].iloc[:9] == "image+dna").all() and (one["evidence"].iloc[9:] == "dna").all()
    for chunk in (3, 7):
        assert outputs[chunk, "csv"] == outputs[4096, "csv"]  # byte for byte
        chunked, whole = (pd.read_json(io.StringIO(outputs[c, "json"])) for c in (chunk, 4096))
        pd.testing.assert_frame_equal(chunked, whole, atol=1e-6)  # float32 search in other batch shapes


def _stream_peak(embedder, index, path: Path, chunk: int) -> tuple[int, int]:
    """(peak traced bytes, rows) of reading, embedding, searching and writing ``path`` a chunk at a time."""
    from clibd.commands.classify import RowWriter
    from clibd.embed.inputs import specimen_chunks
    from clibd.index.classify_specimens import search_specimens

    writer, rows = RowWriter("csv", io.StringIO()), 0
    tracemalloc.start()
    try:
        for inputs in specimen_chunks(embedder, None, [str(path)], chunk=chunk):
            table = search_specimens(index, inputs, 3).table
            writer.stream = io.StringIO()  # written out, as to a file
            writer.write(table)
            rows += len(table)
        return tracemalloc.get_traced_memory()[1], rows
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_input(library, bold, tmp_path) -> None:
    """numpy and Python allocations (tracemalloc) at the peak: 4x the records, about the same memory."""
    from clibd.embed.embedder import Embedder
    from clibd.index.library import load_library

    embedder = Embedder(library[0], device="cpu")
    index = load_library(library[1], embedder)
    peaks = {}
    for n in (2_000, 8_000):
        records = bold.iloc[np.arange(n) % len(bold)].copy()
        records["processid"] = [f"r{i}" for i in range(n)]
        path = tmp_path / f"{n}.fasta"
        path.write_text(_fasta(records))
        peaks[n], rows = _stream_peak(embedder, index, path, chunk=500)
        assert rows == n
    print(f"traced peak: {peaks}")
    assert peaks[8_000] < 1.25 * peaks[2_000]  # everything at once would be ~4x
    assert peaks[8_000] < 64 << 20


def test_every_input_file_and_record_gets_one_row(library, bold, tmp_path, capsys) -> None:
    good = bold.iloc[:4]
    fasta = tmp_path / "new.fasta"
    body = _fasta(good).encode()
    second = body.index(b">", 1)
    fasta.write_bytes(body[:second] + body[second:].replace(b"\n", b"\n\xff", 1))  # a bad byte in record 2's bases
    table = tmp_path / "table.csv"
    table.write_text(
        f"processid,nucleotides\nc1,{good['nucleotides'].iat[0]}\nc2,AC,GT\nc3,{good['nucleotides'].iat[1]}\n"
    )
    parquet = tmp_path / "p.parquet"
    pd.DataFrame({"id": ["q1"], "sequence": [good["nucleotides"].iat[2]]}).to_parquet(parquet)
    empty, words, missing = tmp_path / "empty.fasta", tmp_path / "words.tsv", tmp_path / "gone.fasta"
    empty.write_text("")
    words.write_text("sample\tbases\nx\tACGT\n")
    out = tmp_path / "rows.csv"
    inputs = [fasta, table, parquet, empty, words, missing]
    assert _classify(library, "--dna", *map(str, inputs), "--out", str(out)) == 0
    rows = pd.read_csv(out, keep_default_na=False)
    ids = [*good["processid"], "c1", "c3", f"{table}:3", "q1", str(empty), str(words), str(missing)]
    assert rows["id"].tolist() == ids
    quality = dict(zip(rows["id"], rows["quality"]))
    assert quality[good["processid"].iat[1]] == "unreadable (line 4: not UTF-8 text (byte 0xff))"
    assert quality[f"{table}:3"] == "unreadable (line 3: expected 2 fields, found 3)"
    assert quality[str(empty)] == "unreadable (no FASTA records (no '>' header line))"
    assert quality[str(words)].startswith("unreadable (no id or barcode column; ids are read from one of")
    assert quality[str(missing)] == f"unreadable (FASTA file not found: {missing})"
    classified = [good["processid"].iat[i] for i in (0, 2, 3)] + ["c1", "c3", "q1"]
    assert (rows.set_index("id").loc[classified, "evidence"] == "dna").all()
    assert (rows.set_index("id").drop(index=classified)["evidence"] == "").all()
    err = capsys.readouterr().err
    assert "classified 6 of 11 specimens" in err and "unreadable 5" in err
    assert f"clibd classify: {fasta} record 2: unreadable (line 4: not UTF-8 text (byte 0xff))" in err


def _exif_rotated(photo: Path) -> bytes:
    """The photo stored turned 90 degrees, with the EXIF tag that says how to turn it back."""
    image = Image.open(photo).convert("RGB").rotate(90, expand=True)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": undoes the 90 degrees counter-clockwise above
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def test_every_image_format_pil_opens_gets_its_row(library, tmp_path, capsys) -> None:
    from clibd.data.transforms import decode_image

    photo = sorted(REAL_IMAGES.glob("valid_*.jpg"))[0]
    image = Image.open(photo).convert("RGB")
    folder = tmp_path / "photos"
    folder.mkdir()
    for fmt, suffix in (("GIF", ".gif"), ("TIFF", ".tif"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("PPM", ".ppm")):
        image.save(folder / f"as_{suffix[1:]}{suffix}", fmt)
    frames = [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("L").convert("RGB")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (folder / "upright.jpg").write_bytes(_exif_rotated(photo))
    (folder / "notes.txt").write_text("not a photo")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    first = decode_image((folder / "animated.gif").read_bytes(), "animated.gif")
    assert (
        first.size == image.size
        and np.abs(np.asarray(first, float) - np.asarray(image.quantize().convert("RGB"), float)).mean() < 1
    )
    upright = decode_image((folder / "upright.jpg").read_bytes(), "upright.jpg")
    assert upright.size == image.size  # turned back to how it was photographed
    assert np.abs(np.asarray(upright, float) - np.asarray(image, float)).mean() < 6
    out = tmp_path / "rows.csv"
    assert _classify(library, "--images", str(folder), "--out", str(out), "--keep-flagged") == 0
    rows = pd.read_csv(out, keep_default_na=False).set_index("id")
    expected = ["animated", "as_bmp", "as_gif", "as_ppm", "as_tif", "as_webp", "broken", "upright"]
    assert sorted(rows.index) == expected  # the text file is no photo: named on stderr, not a row
    assert rows.loc["broken", "quality"].startswith("unreadable (") and rows.loc["broken", "evidence"] == ""
    assert (rows.drop(index="broken")["evidence"] == "image").all()
    err = capsys.readouterr().err
    assert f"clibd classify: ignored 1 files that are no image format PIL opens: {folder / 'notes.txt'}" in err
