"""Latin-looking taxon names built from syllables, and BOLD-style interim species names."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clibd.taxonomy import is_placeholder_species

# BIOSCAN's orders (real names), most abundant first, with the share of specimens the
# demo gives each: a few big orders dominate, as in malaise-trap catches.
ORDERS: tuple[tuple[str, float], ...] = (
    ("Diptera", 0.40),
    ("Hymenoptera", 0.18),
    ("Hemiptera", 0.10),
    ("Lepidoptera", 0.08),
    ("Coleoptera", 0.08),
    ("Psocodea", 0.04),
    ("Thysanoptera", 0.03),
    ("Trichoptera", 0.025),
    ("Orthoptera", 0.02),
    ("Neuroptera", 0.015),
    ("Blattodea", 0.01),
    ("Ephemeroptera", 0.01),
)

_ONSETS = np.array("b c d g l m n p r s t v ch ph th tr st pl cr x".split())
_VOWELS = np.array(["a", "e", "i", "o", "u", "y", "ae", "eu"])
_CODAS = np.array(["", "", "", "n", "r", "s", "l", "m", "x"])
_ENDINGS = {
    "family": np.array(["idae"]),
    "subfamily": np.array(["inae"]),
    "genus": np.array(["a", "us", "ia", "ella", "omyia", "ops", "ocera", "ites", "ion", "ina", "oides"]),
    "epithet": np.array(["ensis", "us", "a", "i", "ata", "alis", "ella", "um", "icus", "ae", "iformis"]),
}


def latin_names(rng: np.random.Generator, n: int, kind: str) -> list[str]:
    """``n`` distinct names of one kind: family (-idae), subfamily (-inae), genus, epithet."""
    names: dict[str, None] = {}
    while len(names) < n:
        m = 2 * n + 8
        stem = rng.choice(_ONSETS, m)
        for part in (_VOWELS, _ONSETS, _VOWELS, _CODAS):  # two syllables
            stem = np.char.add(stem, rng.choice(part, m))
        # Every ending starts with a vowel: drop the stem's final vowels so they do not pile up.
        words = np.char.add(np.char.rstrip(stem, "aeiouy"), rng.choice(_ENDINGS[kind], m))
        if kind != "epithet":
            words = np.char.capitalize(words)
        for word in words.tolist():
            if len(names) < n and word not in names and not is_placeholder_species(word.capitalize()):
                names[word] = None
    return list(names)


def placeholder_species(rng: np.random.Generator, genera: np.ndarray) -> list[str]:
    """Interim names as BOLD gives them ("Aus sp. 3", "Aus malaise12", "Aus sp. BIOUG01234-A01", "Aus cf. bus")."""
    n = len(genera)
    style = rng.integers(0, 4, n)
    number = rng.integers(1, 40, n)
    plate = rng.integers(1000, 99999, n)
    well = np.char.add(rng.choice(np.array(list("ABCDEFGH")), n), np.char.zfill(rng.integers(1, 13, n).astype(str), 2))
    epithets = latin_names(rng, n, "epithet")
    names = pd.Series(
        [
            (f"{g} sp. {k}", f"{g} malaise{k}", f"{g} sp. BIOUG{p:05d}-{w}", f"{g} cf. {e}")[s]
            for g, s, k, p, w, e in zip(genera, style, number, plate, well, epithets)
        ]
    )
    # Several species of one genus may draw the same number: make each name unique.
    repeat = names.groupby(names).cumcount()
    return names.where(repeat == 0, names + "_" + (repeat + 1).astype(str)).tolist()
