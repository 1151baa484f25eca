"""New-specimen inputs of ``clibd classify`` / ``clibd embed``, fuzzed: any text gets the
barcode quality a per-character oracle gives; any barcode file gives records that each name
their file and record number, or one row naming the file and why it cannot be read, or a
duplicate-id error naming the id; any photo gets a known quality text (too_small, empty_well,
blurry or passed), never an exception."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from clibd.config import QualityConfig
from clibd.data.quality import barcode_quality, photo_quality
from clibd.embed.inputs import SeenIds
from clibd.embed.records import read_barcode_records
from tests.helpers.fuzz import FUZZ, FUZZ_EXAMPLES

pytestmark = [pytest.mark.reliability, pytest.mark.fuzz, pytest.mark.timeout(240 * max(1, FUZZ_EXAMPLES // 300))]

IUPAC = set("ACGTURYSWKMBDHVNacgturyswkmbdhvn")
GAPS = set("-. \t\r\n\v\f")


def quality_oracle(seq: str, rules: QualityConfig) -> str:
    """docs/quality.md, one character at a time."""
    invalid = sorted({c for c in seq if c not in IUPAC and c not in GAPS})
    valid = sum(c in "ACGTacgt" for c in seq)
    core = "".join(c for c in seq if c not in GAPS).strip("Nn")
    ambiguous = sum(c in IUPAC and c not in "ACGTacgt" for c in core)
    share = ambiguous / max(valid + ambiguous, 1)
    reasons = []
    if invalid:
        shown = [c if c.isprintable() and not c.isspace() else ascii(c)[1:-1] for c in invalid]
        reasons.append(f"invalid_characters ({', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''})")
    if valid < rules.min_valid_nt:
        reasons.append(f"too_short ({valid} valid nt < {rules.min_valid_nt})")
    if share > rules.max_ambiguous:
        reasons.append(f"too_ambiguous ({100 * share:.1f}% N or ambiguity codes > {100 * rules.max_ambiguous:.1f}%)")
    return "; ".join(reasons)


dna_like = st.text(st.sampled_from(list("ACGTacgtNnRYKMSWBDHVU-. \t\r\n")), max_size=300)
barcodes = st.lists(st.one_of(dna_like, st.text(max_size=40)), min_size=1, max_size=6)
rules = st.builds(QualityConfig, min_valid_nt=st.integers(0, 300), max_ambiguous=st.floats(0, 1))


@FUZZ
@given(barcodes, rules)
def test_barcode_quality_matches_the_oracle_on_any_text(sequences: list[str], rules: QualityConfig) -> None:
    assert barcode_quality(sequences, rules) == [quality_oracle(s, rules) for s in sequences]


record_id = st.sampled_from(["a", "b", "c", "x y", "ä", ""])
record = st.tuples(record_id, dna_like)


@FUZZ
@given(st.lists(record, max_size=8), st.sampled_from([".fasta", ".csv", ".tsv"]), st.sampled_from(["\n", "\r\n"]))
def test_barcode_files_give_traceable_records_a_named_skip_or_a_duplicate_error(rows, suffix: str, end: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="clibd-fuzz-"))
    path = folder / f"new{suffix}"
    if suffix == ".fasta":
        text = end.join(f">{i}{end}{s.strip()}" for i, s in rows)
    else:
        sep = "," if suffix == ".csv" else "\t"
        cells = [(i, re.sub(r"[,\t\r\n]", "", s)) for i, s in rows]  # no separators inside a cell
        text = end.join([f"processid{sep}nucleotides", *(f"{i}{sep}{s}" for i, s in cells)])
    path.write_text(text, encoding="utf-8")
    records = read_barcode_records([path])
    assert (records["file"] == str(path)).all()
    if records["record"].isna().any():  # the file could not be read: its one row says why
        assert len(records) == 1 and records["id"].iloc[0] == str(path) and records["problem"].iloc[0]
        return
    assert records["record"].tolist() == list(range(1, len(records) + 1))
    duplicated = records["id"][records["id"].duplicated()]
    if len(duplicated):
        with pytest.raises(ValueError, match=re.escape(repr(duplicated.iloc[0]))):
            SeenIds("barcode").check(records)
    else:
        SeenIds("barcode").check(records)
    assert len(barcode_quality(records["sequence"].tolist(), QualityConfig())) == len(records)


@st.composite
def photos(draw) -> Image.Image:
    width, height = draw(st.integers(1, 700)), draw(st.integers(1, 700))
    kind = draw(st.sampled_from(["noise", "constant", "gradient", "spots"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "noise":
        pixels = rng.integers(0, 256, (height, width, 3))
    elif kind == "constant":
        pixels = np.full((height, width, 3), draw(st.integers(0, 255)))
    elif kind == "gradient":
        pixels = np.broadcast_to(np.linspace(0, 255, width)[None, :, None], (height, width, 3))
    else:
        pixels = np.full((height, width, 3), 200) - 150 * (rng.random((height, width, 1)) < 0.001)
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))


@FUZZ
@given(photos(), st.integers(1, 400))
def test_any_photo_gets_a_known_quality_text(photo: Image.Image, min_size: int) -> None:
    quality = photo_quality(photo, min_size, QualityConfig())
    if min(photo.size) < min_size:
        assert quality == f"too_small ({photo.width}x{photo.height} px < {min_size})"
    else:
        assert quality in ("", "empty_well", "blurry")
        if len(set(np.asarray(photo).ravel().tolist())) == 1:
            assert quality == "empty_well"  # nothing stands out from a uniform well
