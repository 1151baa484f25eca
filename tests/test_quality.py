"""Quality checks of new specimens (clibd.data.quality): exact texts on synthetic barcodes and
photos, the real BOLD barcodes, and the 40 real BIOSCAN photos (valid / empty / blurry)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from clibd.config import QualityConfig
from clibd.data.quality import barcode_quality, photo_quality
from tests.data_paths import BOLD_4K, BOLD_NL, REAL_IMAGES, needs_shared_data

RULES = QualityConfig()
GOOD = "ACGT" * 60  # 240 valid nt


def test_barcode_quality_exact_texts() -> None:
    sequences = [
        GOOD,
        "ÄÖÜ",
        "acgtNNNN----RYKM   acgt",
        "NNNN" + GOOD + "nnnn-",  # end padding of N is not ambiguity
        GOOD[:-8] + "NNNNNNNN" + GOOD[:8],  # 8 of 240 inside: 3.3 %
        GOOD + "N" * 13 + GOOD[:4],  # 13 of 257 inside: 5.1 %
        GOOD + "?1",
        "",
        GOOD.lower().replace("t", "u"),  # RNA: U is IUPAC but no DNA base
    ]
    assert barcode_quality(sequences, RULES) == [
        "",
        "invalid_characters (Ä, Ö, Ü); too_short (0 valid nt < 200)",
        "too_short (8 valid nt < 200); too_ambiguous (50.0% N or ambiguity codes > 5.0%)",
        "",
        "",
        "too_ambiguous (5.1% N or ambiguity codes > 5.0%)",
        "invalid_characters (1, ?)",
        "too_short (0 valid nt < 200)",
        "too_short (180 valid nt < 200); too_ambiguous (25.0% N or ambiguity codes > 5.0%)",
    ]


def test_barcode_quality_minimums_are_configurable_and_control_characters_escaped() -> None:
    strict = QualityConfig(min_valid_nt=500, max_ambiguous=0.01)  # BOLD's BARCODE standard
    assert barcode_quality([GOOD, GOOD + "N" + GOOD], strict) == [
        "too_short (240 valid nt < 500)",
        "too_short (480 valid nt < 500)",
    ]
    loose = QualityConfig(min_valid_nt=4, max_ambiguous=0.5)
    assert barcode_quality(["acgtNNNN----RYKM   acgt"], loose) == [""]
    assert barcode_quality([GOOD + "\x00\u00a0"], RULES) == ["invalid_characters (\\x00, \\xa0)"]


@needs_shared_data
def test_real_bold_barcodes_pass_the_defaults_and_the_flagged_share_is_as_documented() -> None:
    nl = pd.read_csv(BOLD_NL, sep="\t", dtype=str)["nuc"].fillna("")
    assert all(q == "" for q in barcode_quality(nl.tolist(), RULES))  # curated: gaps, lower case, no N
    bold = pd.read_csv(BOLD_4K, sep="\t", dtype=str)["nucleotides"].tolist()
    flagged = [q for q in barcode_quality(bold, RULES) if q]
    assert len(flagged) == 21 and all(q.startswith("too_ambiguous") for q in flagged)  # docs/quality.md
    strict = [q for q in barcode_quality(bold, QualityConfig(min_valid_nt=500, max_ambiguous=0.01)) if q]
    assert len(strict) == 569  # BOLD BARCODE-grade minimums refuse 13 % of these real records


def _well(size: tuple[int, int] = (1024, 768), insect: bool = True, blur: float = 0.0) -> Image.Image:
    """A grey well with bright sharp reflections and (optionally) a dark specimen, maybe out of focus."""
    image = Image.new("L", size, 200)
    draw = ImageDraw.Draw(image)
    if insect:
        draw.ellipse((480, 350, 560, 400), fill=60)
        draw.line((440, 330, 600, 420), fill=70, width=4)
    image = image.filter(ImageFilter.GaussianBlur(blur)) if blur else image
    draw = ImageDraw.Draw(image)
    for angle in np.linspace(0, 2 * np.pi, 24, endpoint=False):  # the ring of reflections stays sharp
        x, y = 512 + 250 * np.cos(angle), 384 + 250 * np.sin(angle)
        draw.rectangle((x - 4, y - 4, x + 4, y + 4), fill=255)
    return image.convert("RGB")


def test_photo_quality_synthetic_wells() -> None:
    assert photo_quality(Image.new("RGB", (1, 1)), 224, RULES) == "too_small (1x1 px < 224)"
    assert photo_quality(Image.new("RGB", (300, 200)), 224, RULES) == "too_small (300x200 px < 224)"
    assert photo_quality(_well(), 224, RULES) == ""
    assert photo_quality(_well(insect=False), 224, RULES) == "empty_well"
    assert photo_quality(Image.new("RGB", (640, 480), (200, 200, 200)), 224, RULES) == "empty_well"
    assert photo_quality(_well(blur=8), 224, RULES) == "blurry"
    assert photo_quality(_well(blur=8), 224, QualityConfig(min_focus_ratio=0.0)) == ""


@needs_shared_data
def test_photo_quality_on_the_40_real_bioscan_photos(capsys) -> None:
    photos = sorted(REAL_IMAGES.glob("*.jpg"))
    assert len(photos) == 40
    truth, found = [], []
    for path in photos:
        image = Image.open(path)
        image.draft("RGB", (384, 384))  # as the Embedder decodes them
        truth.append(path.name.split("_")[0])
        found.append(photo_quality(image.convert("RGB"), 224, RULES) or "passed")
    table = pd.crosstab(pd.Series(truth, name="file says"), pd.Series(found, name="quality"))
    with capsys.disabled():
        print(f"\nphoto quality on the 40 real BIOSCAN photos:\n{table}\n")
    flagged = pd.Series(found) != "passed"
    is_bad = pd.Series(truth) != "valid"
    assert (flagged == is_bad).all(), [p.name for p, f, b in zip(photos, flagged, is_bad) if f != b]
    assert table.loc["valid", "passed"] == 32 and table.loc["empty", "empty_well"] == 3
    assert table.loc["blurry", "blurry"] == 3
