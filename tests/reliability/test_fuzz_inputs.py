"""Bad inputs, fuzzed with hypothesis: CSV/TSV and FASTA files (ragged rows, missing
columns, BOM, CRLF, empty files, binary garbage), image bytes (every mode and format,
truncated, bit-flipped, garbage, 1x1, decompression-bomb headers) and specimen metadata
(unknown or missing splits, NaN and missing ranks, duplicated or missing processids).

Each input gives a clean result in which every record is either kept or counted as a skip,
or an error that names the file (and line) or the record; never another exception, and
never a hang (each test runs under a pytest-timeout). The DNA tokeniser is fuzzed against
its oracle in tests/test_fuzz_tokenizer.py."""

from __future__ import annotations

import io
import re
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from clibd.config import DataConfig, SplitRoles
from clibd.data.roles import eval_splits, known_splits
from clibd.data.sources import read_specimens
from clibd.data.specimens import (
    REASON_DNA,
    REASON_DUPLICATE,
    REASON_IMAGE,
    REASON_NO_ID,
    REASON_SPLIT,
    missing_label_reason,
    normalise_table,
    validate_table,
)
from clibd.data.transforms import ImageDecodeError, build_transform, decode_image
from tests.helpers.fuzz import FUZZ, FUZZ_EXAMPLES
from tests.helpers.image_faults import bomb_jpeg

pytestmark = [pytest.mark.reliability, pytest.mark.fuzz, pytest.mark.timeout(240 * max(1, FUZZ_EXAMPLES // 300))]
ROLES = SplitRoles()
SPLITS = sorted(known_splits(ROLES))
RANKS = ("order", "family", "genus", "species")


def _write(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="clibd-fuzz-"))
    path = folder / name
    path.write_bytes(data)
    return path


# ---- CSV / TSV ------------------------------------------------------------------------------

COLUMNS = ["processid", "split", *RANKS, "dna_barcode", "notes"]
WORDS = ["", " ", "A", "B", "C", "NA", "null", "not_classified", "ACGT", "nnnn", "-", "Aedes aegypti", *SPLITS, "bogus"]
# no separators, quotes or line breaks inside a cell: those make other, equally valid, files
free_text = st.text(st.characters(exclude_characters=',\t\r\n"', exclude_categories=("Cs",)), max_size=10)
cell = st.one_of(st.sampled_from(WORDS), free_text)


@st.composite
def delimited_files(draw) -> tuple[bytes, str, list[str], list[list[str]]]:
    suffix = draw(st.sampled_from([".csv", ".tsv"]))
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=len(COLUMNS), unique=True))
    width = len(header)
    ragged = draw(st.booleans())
    rows = draw(st.lists(
        st.lists(cell, min_size=max(width - 1, 1) if ragged else width, max_size=width + 1 if ragged else width),
        max_size=12,
    ))  # fmt: skip
    sep = "," if suffix == ".csv" else "\t"
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(sep.join(r) for r in [header, *rows]) + (end if draw(st.booleans()) else "")
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode("utf-8"), suffix, header, rows


@FUZZ
@given(delimited_files())
def test_fuzzed_csv_tsv_gives_counted_records_or_an_error_naming_file_and_line(case) -> None:
    data, suffix, header, rows = case
    path = _write(data, f"specimens{suffix}")
    cfg = DataConfig(format="tabular", root=str(path), bad_records="skip")
    # A line that is empty after its separators are gone is no record (blank lines are skipped).
    lines = [(i + 2, r) for i, r in enumerate(rows) if "".join(r) or len(r) > 1]
    ragged = [n for n, r in lines if len(r) != len(header)]
    if "processid" not in header:
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: missing column 'processid'"):
            read_specimens(cfg)
    elif ragged:
        with pytest.raises(
            ValueError, match=rf"{re.escape(str(path))}: line {ragged[0]}: expected {len(header)} fields"
        ):
            read_specimens(cfg)
    else:
        table, report = read_specimens(cfg)
        assert report.read == len(lines)
        assert len(table) + report.skipped == report.read
        assert table["processid"].notna().all() and table["processid"].is_unique


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([".csv", ".tsv", ".fasta"]))
def test_binary_garbage_gives_counted_records_or_an_error_naming_the_file(data: bytes, suffix: str) -> None:
    path = _write(data, f"garbage{suffix}")
    cfg = DataConfig(format="fasta" if suffix == ".fasta" else "tabular", root=str(path), bad_records="skip")
    try:
        table, report = read_specimens(cfg)
    except ValueError as err:
        assert str(path) in str(err)
    else:
        assert len(table) + report.skipped == report.read


# ---- FASTA ----------------------------------------------------------------------------------

header_text = st.text(st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), max_size=30)
fasta_line = st.one_of(
    header_text.map(lambda t: ">" + t),
    st.lists(st.sampled_from(["A", "B", "C"] + SPLITS[:3] + ["Diptera", "", " "]), min_size=1, max_size=8).map(
        lambda fields: ">" + "|".join(fields)
    ),
    st.text(st.sampled_from(list("ACGTNacgtnRYKMSWBDHV-. \t")), max_size=40),
    st.just(""),
)


@FUZZ
@given(st.lists(fasta_line, max_size=12), st.sampled_from(["\n", "\r\n", "\r"]), st.booleans())
def test_fuzzed_fasta_gives_counted_records_or_an_error_naming_file_and_line(lines, end: str, bom: bool) -> None:
    path = _write((("\ufeff" if bom else "") + end.join(lines)).encode("utf-8"), "barcodes.fasta")
    cfg = DataConfig(format="fasta", root=str(path), bad_records="skip")
    headers = [i + 1 for i, line in enumerate(lines) if line.startswith(">")]
    before = [i + 1 for i, line in enumerate(lines[: headers[0] - 1] if headers else lines) if line.strip()]
    too_many = [n for n in headers if lines[n - 1].count("|") > 5]
    name = re.escape(str(path))
    if before:
        with pytest.raises(ValueError, match=rf"{name}: line {before[0]}: expected a '>' header line"):
            read_specimens(cfg)
    elif not headers:
        with pytest.raises(ValueError, match=rf"{name}: no FASTA records"):
            read_specimens(cfg)
    elif too_many:
        with pytest.raises(ValueError, match=rf"{name}: line {too_many[0]}: header has more than 6"):
            read_specimens(cfg)
    else:
        table, report = read_specimens(cfg)
        assert report.read == len(headers)
        assert len(table) + report.skipped == report.read
        assert not table["dna_barcode"].str.contains(r"\s", regex=True).any()


# ---- images ---------------------------------------------------------------------------------

SAVEABLE = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "LA", "RGB", "RGBA", "CMYK", "I;16"],
    "WEBP": ["RGB", "RGBA"],
}
FORMAT_MODES = [(fmt, mode) for fmt, modes in SAVEABLE.items() for mode in modes]


def _image_bytes(fmt: str, mode: str, width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR (CRC fixed up) claims ``width`` x ``height``."""
    data = bytearray(_image_bytes("PNG", "RGB", 1, 1, 0))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def _decoded_or_named(data: bytes, ref: str) -> Optional[Image.Image]:
    try:
        img = decode_image(data, ref, min_side=16)
    except ImageDecodeError as err:
        assert ref in str(err)
        return None
    assert img.mode == "RGB" and min(img.size) >= 1
    return img


EVAL_TRANSFORM = build_transform(16)


@FUZZ
@given(st.sampled_from(FORMAT_MODES), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**16))
def test_every_mode_and_format_decodes_to_rgb_of_its_size(fmt_mode, width: int, height: int, seed: int) -> None:
    fmt, mode = fmt_mode
    img = decode_image(_image_bytes(fmt, mode, width, height, seed), f"x.{fmt.lower()}")
    assert img.mode == "RGB" and img.size == (width, height)
    tensor = EVAL_TRANSFORM(img)
    assert tensor.shape == (3, 16, 16) and bool(tensor.isfinite().all())


@FUZZ
@given(
    st.sampled_from(FORMAT_MODES),
    st.integers(1, 40),
    st.integers(1, 40),
    st.sampled_from(["truncate", "flip", "append"]),
    st.data(),
)
def test_damaged_images_decode_or_raise_naming_the_ref(fmt_mode, width: int, height: int, damage: str, draw) -> None:
    fmt, mode = fmt_mode
    data = bytearray(_image_bytes(fmt, mode, width, height, seed=width * 41 + height))
    if damage == "truncate":
        data = data[: draw.draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        for pos in draw.draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[pos] ^= draw.draw(st.integers(1, 255))
    else:
        data += draw.draw(st.binary(min_size=1, max_size=64))
    _decoded_or_named(bytes(data), f"specimen-{fmt}-{damage}.img")


@FUZZ
@given(st.binary(max_size=512))
def test_garbage_bytes_raise_naming_the_ref(data: bytes) -> None:
    _decoded_or_named(data, "garbage.jpg")


BOMBS = [
    (bomb_jpeg, (10000, 10000)),
    (bomb_jpeg, (65535, 65535)),
    (bomb_jpeg, (65535, 1000)),
    (_png_claiming, (10000, 10000)),
    (_png_claiming, (65535, 65535)),
    (_png_claiming, (50_000_001, 1)),
]


@pytest.mark.parametrize("make,size", BOMBS, ids=[f"{m.__name__}-{w}x{h}" for m, (w, h) in BOMBS])
def test_decompression_bomb_headers_are_refused_before_decoding(make, size: tuple[int, int]) -> None:
    # PIL's own guard (past 2x its limit) fires in Image.open, before ours: both name the ref.
    with pytest.raises(ImageDecodeError, match=r"image bomb.img: .*decompression.bomb"):
        decode_image(make(*size), "bomb.img")


# ---- metadata -------------------------------------------------------------------------------

pid = st.sampled_from(["A", "B", "C", "D", "E", "", " ", None])
split = st.sampled_from([*SPLITS, "bogus", "TRAIN", "", None])
rank = st.sampled_from(["Diptera", "x", "", " ", "not_classified", None, float("nan")])
barcode = st.sampled_from(["ACGT", "acgtn", "", "NNNN", "n-n .", " ", None])
image = st.sampled_from(["a.jpg", "", None])
rows = st.lists(st.tuples(pid, split, rank, rank, rank, rank, barcode, image), max_size=14)


def _oracle(table: pd.DataFrame, required: list[str], dna: bool, img: bool) -> list[Optional[str]]:
    """The first reason each row is bad (None: kept), row by row in plain Python."""

    def missing(v) -> bool:
        return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))

    has_splits = table["split"].notna().any()
    seen: set = set()
    reasons: list[Optional[str]] = []
    for r in table.astype(object).itertuples(index=False):
        reason = None
        if missing(r.processid):
            reason = REASON_NO_ID
        elif r.processid in seen:
            reason = REASON_DUPLICATE
        elif has_splits and (missing(r.split) or r.split not in known_splits(ROLES)):
            reason = REASON_SPLIT
        elif has_splits and r.split in eval_splits(ROLES) and any(missing(getattr(r, k)) for k in required):
            reason = missing_label_reason(next(k for k in required if missing(getattr(r, k))))
        elif dna and (missing(r.dna_barcode) or not r.dna_barcode.strip("Nn.- \t")):
            reason = REASON_DNA
        elif img and missing(r.image_ref):
            reason = REASON_IMAGE
        if not missing(r.processid):
            seen.add(r.processid)
        reasons.append(reason)
    return reasons


@FUZZ
@given(rows, st.lists(st.sampled_from(RANKS), unique=True), st.booleans(), st.booleans())
def test_metadata_skips_exactly_the_bad_records_and_errors_name_the_first(raw, required, dna: bool, img: bool) -> None:
    table = normalise_table(
        pd.DataFrame(raw, columns=["processid", "split", *RANKS, "dna_barcode", "image_ref"], dtype=object)
    )
    reasons = _oracle(table, required, dna, img)
    kwargs = dict(roles=ROLES, required_ranks=required, require_dna=dna, require_image=img)
    kept, report = validate_table(table, "meta.csv", "skip", **kwargs)
    assert kept["processid"].tolist() == [p for p, r in zip(table["processid"], reasons) if r is None]
    counts: dict[str, int] = {}
    for r in reasons:
        if r is not None:
            counts[r] = counts.get(r, 0) + 1
    assert report.counts == counts and report.read == len(table)
    bad = [i for i, r in enumerate(reasons) if r is not None]
    if bad:
        with pytest.raises(
            ValueError, match=rf"meta.csv: record {re.escape(repr(table['processid'].iat[bad[0]]))} \(row {bad[0]}\)"
        ):
            validate_table(table, "meta.csv", "error", **kwargs)
    else:
        assert len(validate_table(table, "meta.csv", "error", **kwargs)[0]) == len(table)
