"""Fixtures shared across test modules (helpers they build on live in tests/helpers/)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import BertTokenizerFast

from clibd.taxonomy import taxonomy_text
from tests.helpers.learnable_specimens import write_learnable_table, write_text_model

# The text tokenizer's vocabulary: whole words of the test taxonomies, and the pieces of one
# long genus (pseudo ##hexa ##plasio ##myia) so that a name split into several tokens is tested.
TEXT_VOCABULARY = [
    "diptera", "hymenoptera", "lepidoptera", "sciaridae", "cecidomyiidae", "braconidae", "muscidae",
    "chironomidae", "formicidae", "geometridae", "bradysia", "praecox", "apanteles", "aidalopezae",
    "tanytarsus", "pallidicornis", "lasius", "niger", "eupithecia", "not", "_", "classified",
    "pseudo", "##hexa", "##plasio", "##myia", "longissima",
]  # fmt: skip


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> dict[str, Path]:
    """The learnable specimens (CSV + images), a local text model trained on their taxonomy, a cache folder."""
    root = tmp_path_factory.mktemp("learnable")
    csv = write_learnable_table(root / "data")
    table = pd.read_csv(csv, dtype="string")
    strings = taxonomy_text(table, "{order} {family} {genus} {species}", "not_classified").tolist()
    return {"csv": csv, "text": write_text_model(root / "text_model", strings), "cache": root / "cache"}


@pytest.fixture(scope="session")
def text_tokenizer(tmp_path_factory) -> BertTokenizerFast:
    """A WordPiece tokenizer over ``TEXT_VOCABULARY``, loaded from a folder as a real checkpoint's is
    (transformers v5 silently ignores ``BertTokenizerFast(vocab_file=...)``)."""
    folder = tmp_path_factory.mktemp("text_tokenizer")
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TEXT_VOCABULARY]) + "\n"
    )
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    assert tokenizer.vocab_size == 5 + len(TEXT_VOCABULARY) and tokenizer.model_max_length == 512
    return tokenizer
