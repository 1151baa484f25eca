"""Fixtures shared across test modules (helpers they build on live in tests/helpers/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clibd.taxonomy import taxonomy_text
from tests.helpers.learnable_specimens import write_learnable_table, write_text_model


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> dict[str, Path]:
    """The learnable specimens (CSV + images), a local text model trained on their taxonomy, a cache folder."""
    root = tmp_path_factory.mktemp("learnable")
    csv = write_learnable_table(root / "data")
    table = pd.read_csv(csv, dtype="string")
    strings = taxonomy_text(table, "{order} {family} {genus} {species}", "not_classified").tolist()
    return {"csv": csv, "text": write_text_model(root / "text_model", strings), "cache": root / "cache"}
