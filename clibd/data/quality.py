"""Is a new specimen's barcode or photo good enough to identify? Fast checks before embedding.

Each check returns one text per input: ``""`` when it passed, else the reasons, joined by
``"; "``, in the ``quality`` column of ``clibd classify`` / ``clibd embed``. Thresholds come
from :class:`clibd.config.QualityConfig`; docs/quality.md gives their sources and the figures
measured on real BIOSCAN photos.

Barcodes (vectorised over the whole input):
  - ``invalid_characters (Ä, Ö)``: a character that is no IUPAC nucleotide code (A C G T U
    R Y S W K M B D H V N, either case), no alignment gap (``-`` ``.``) and no ASCII space;
  - ``too_short (8 valid nt < 200)``: fewer A/C/G/T than ``min_valid_nt``;
  - ``too_ambiguous (12.5% N or ambiguity codes > 5.0%)``: N and the other IUPAC codes
    over all bases, after removing gaps and the runs of N at either end (BOLD pads
    barcodes with N; the tokenizer drops them too).

Photos (on a grey copy whose shorter side is ``ANALYSIS_SIDE`` px):
  - ``too_small (100x80 px < 224)``: a side below the model's input size (then no other check);
  - ``empty_well``: no object stands out from the well. The background is a wide Gaussian
    blur of the photo; the object contrast is the 99.9th percentile of background minus
    pixel. Below ``min_object_contrast`` grey levels nothing darker than the plastic is there;
  - ``blurry``: the object is out of focus. The 90th percentile of the gradient magnitude on
    the object (pixels darker than the background by half the object contrast) over that on
    the well's highlights (pixels 25 grey levels brighter than the background, floor 10):
    in a sharp photo the specimen's edges are as steep as the plastic's reflections or
    steeper; below ``min_focus_ratio`` the camera focused on the well, not on the specimen.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from clibd.config import QualityConfig

ANALYSIS_SIDE = 384  # shorter side of the analysed copy: a 1024x768 BIOSCAN photo -> 512x384
_GAPS = r"[\-. \t\r\n\v\f]"
_NOT_IUPAC = r"[^ACGTURYSWKMBDHVNacgturyswkmbdhvn\-. \t\r\n\v\f]"
_AMBIGUOUS = r"[URYSWKMBDHVNuryswkmbdhvn]"
_HIGHLIGHT = 25.0  # grey levels above the background that make a pixel a highlight of the well
_MIN_EDGE = 10.0  # floor of the highlights' sharpness, so a photo without highlights is judged absolutely


def _shown(chars: set[str], most: int = 5) -> str:
    """Up to ``most`` offending characters, printable ones as they are, others escaped."""
    shown = [c if c.isprintable() and not c.isspace() else ascii(c)[1:-1] for c in sorted(chars)]
    return ", ".join(shown[:most]) + (", ..." if len(shown) > most else "")


def barcode_quality(sequences: Sequence[str], rules: QualityConfig) -> list[str]:
    """One quality text per sequence (``""`` = passed), reasons in the order of the module docstring."""
    seqs = pd.Series(list(sequences), dtype="string").fillna("")
    invalid = seqs.str.count(_NOT_IUPAC).to_numpy(int) > 0
    valid = seqs.str.count("[ACGTacgt]").to_numpy(int)
    core = seqs.str.replace(_GAPS, "", regex=True).str.strip("Nn")
    ambiguous = core.str.count(_AMBIGUOUS).to_numpy(int)
    share = ambiguous / np.maximum(valid + ambiguous, 1)
    short = valid < rules.min_valid_nt
    vague = share > rules.max_ambiguous
    out = [""] * len(seqs)
    for i in np.flatnonzero(invalid | short | vague):  # only the failures cost Python time
        reasons = []
        if invalid[i]:
            bad = set(pd.Series([seqs.iloc[i]]).str.findall(_NOT_IUPAC).iloc[0])
            reasons.append(f"invalid_characters ({_shown(bad)})")
        if short[i]:
            reasons.append(f"too_short ({valid[i]} valid nt < {rules.min_valid_nt})")
        if vague[i]:
            limit = 100 * rules.max_ambiguous
            reasons.append(f"too_ambiguous ({100 * share[i]:.1f}% N or ambiguity codes > {limit:.1f}%)")
        out[i] = "; ".join(reasons)
    return out


def photo_statistics(image: Image.Image) -> tuple[float, float]:
    """``(object_contrast, focus_ratio)`` of a photo (module docstring), about 20 ms for 1024x768."""
    grey = image.convert("L")
    # The shorter side to ANALYSIS_SIDE, the longer one at most 4x that (a 1x700 strip stays small).
    scale = min(ANALYSIS_SIDE / min(grey.size), 4 * ANALYSIS_SIDE / max(grey.size))
    grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.BILINEAR)
    pixels = np.asarray(grey, dtype=np.float32)
    background = np.asarray(grey.filter(ImageFilter.GaussianBlur(ANALYSIS_SIDE / 12)), dtype=np.float32)
    contrast = background - pixels
    object_contrast = float(np.percentile(contrast, 99.9))
    gy, gx = np.gradient(pixels)
    gradient = np.hypot(gx, gy)
    on_object = contrast > 0.5 * object_contrast
    highlight = contrast < -_HIGHLIGHT
    object_edges = float(np.percentile(gradient[on_object], 90)) if on_object.any() else 0.0
    highlight_edges = float(np.percentile(gradient[highlight], 90)) if highlight.sum() > 10 else 0.0
    return object_contrast, object_edges / max(highlight_edges, _MIN_EDGE)


def photo_quality(image: Image.Image, min_size: int, rules: QualityConfig) -> str:
    """The quality text of one decoded photo (``""`` = passed); ``min_size``: the model's input size."""
    if min(image.size) < min_size:
        return f"too_small ({image.width}x{image.height} px < {min_size})"
    object_contrast, focus_ratio = photo_statistics(image)
    if object_contrast < rules.min_object_contrast:
        return "empty_well"
    if focus_ratio < rules.min_focus_ratio:
        return "blurry"
    return ""
