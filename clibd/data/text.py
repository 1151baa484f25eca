"""Taxonomy text per specimen, tokenised once per distinct string with a HF tokenizer."""

from __future__ import annotations

import logging
from itertools import chain
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from clibd.taxonomy import taxonomy_text

log = logging.getLogger(__name__)


@dataclass
class TextEncoding:
    """Token ids of the distinct strings plus, per table row, which string it has."""

    strings: list[str]  # distinct taxonomy strings
    ids: np.ndarray  # int64 [n_strings, max_length], right-padded with the pad id
    mask: np.ndarray  # int8 [n_strings, max_length], 0 on padding
    inverse: np.ndarray  # int64 [n_rows]: row -> position in ``strings``
    max_length: int
    longest: str  # the string with the most tokens
    longest_tokens: int
    n_cut: int  # distinct strings truncated to ``max_length`` (0 when it was chosen from the data)

    def rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask) of the given table rows, one fancy index each."""
        which = self.inverse[positions]
        return self.ids[which], self.mask[which]


def encode_taxonomy(
    table: pd.DataFrame,
    tokenizer: Any,
    template: str,
    missing_word: str,
    max_length: Optional[int] = None,
) -> TextEncoding:
    """Tokenise each distinct ``template`` string of ``table`` once.

    ``max_length`` None = the longest tokenised string (special tokens included), so no
    species name is cut; a configured value that cuts strings logs a warning with how many.
    """
    codes, uniques = pd.factorize(taxonomy_text(table, template, missing_word), sort=True)
    strings = [str(s) for s in uniques]
    if not strings:
        raise ValueError("cannot encode taxonomy text of an empty table")
    token_lists = tokenizer(strings, truncation=False, padding=False)["input_ids"]
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    longest_at = int(lengths.argmax())
    longest_tokens = int(lengths[longest_at])
    width = longest_tokens if max_length is None else max_length
    if width < 1:
        raise ValueError(f"text max_length must be >= 1, got {width}")
    cut = np.flatnonzero(lengths > width)
    if len(cut):
        log.warning(
            "text max_length=%d cuts %d of %d distinct taxonomy strings (longest %r has %d tokens); "
            "set model.text.max_length: null to keep every species name whole",
            width,
            len(cut),
            len(strings),
            strings[longest_at],
            longest_tokens,
        )
        truncated = tokenizer([strings[i] for i in cut], truncation=True, max_length=width, padding=False)
        for i, tokens in zip(cut, truncated["input_ids"]):
            token_lists[i] = tokens
        lengths[cut] = [len(t) for t in truncated["input_ids"]]
    else:
        log.info(
            "taxonomy text: %d distinct strings, max_length %d; longest %r has %d tokens",
            len(strings),
            width,
            strings[longest_at],
            longest_tokens,
        )
    mask = np.arange(width)[None, :] < lengths[:, None]
    ids = np.full((len(strings), width), tokenizer.pad_token_id or 0, dtype=np.int64)
    ids[mask] = np.fromiter(chain.from_iterable(token_lists), dtype=np.int64, count=int(lengths.sum()))
    return TextEncoding(
        strings=strings,
        ids=ids,
        mask=mask.astype(np.int8),
        inverse=codes.astype(np.int64),
        max_length=width,
        longest=strings[longest_at],
        longest_tokens=longest_tokens,
        n_cut=len(cut),
    )
