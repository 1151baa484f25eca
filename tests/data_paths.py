"""Where the shared real data lives (../shared/data beside the checkout), and a skip when absent."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BOLD_4K = SHARED_DATA / "dna" / "bold_insecta_4k.tsv"
BOLD_NL = SHARED_DATA / "dna" / "bold_public_nl_515.tsv"
REAL_IMAGES = SHARED_DATA / "images"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent (only in the team's checkout)"
)
