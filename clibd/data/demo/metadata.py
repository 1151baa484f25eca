"""The metadata table of the demo specimens: BIOSCAN-5M's 23 columns, its dtypes, its id styles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from clibd.data.sources.bioscan5m import COLUMN_TYPES, md5_chunk
from clibd.data.demo.specimens import FAMILY, GENUS, SPECIES
from clibd.data.demo.tree import Tree

# (country, province_state, latitude, longitude, share): BIOSCAN's collecting regions.
REGIONS: tuple[tuple[str, str, float, float, float], ...] = (
    ("Canada", "Ontario", 43.5, -80.2, 0.40),
    ("Canada", "British Columbia", 49.3, -123.1, 0.08),
    ("Canada", "Quebec", 45.5, -73.6, 0.06),
    ("Costa Rica", "Guanacaste", 10.8, -85.6, 0.14),
    ("South Africa", "Western Cape", -33.9, 18.9, 0.08),
    ("Pakistan", "Punjab", 31.5, 74.3, 0.07),
    ("Thailand", "Chiang Mai", 18.8, 98.9, 0.07),
    ("Kenya", "Nairobi", -1.3, 36.8, 0.05),
    ("Australia", "Australian Capital Territory", -35.3, 149.1, 0.05),
)
BIOSCAN_1M_SIZE = 1_128_313
# The 23 columns, in file order, as pandas dtypes.
METADATA_DTYPES: dict[str, str] = {
    column: {pa.string(): "string", pa.float64(): "float64", pa.uint8(): "uint8", pa.int64(): "Int64"}[kind]
    for column, kind in COLUMN_TYPES.items()
}
_PROJECTS_PER_DATASET = 8


def _letters(numbers: np.ndarray, k: int) -> np.ndarray:
    """Each number < 26**k written as ``k`` upper-case letters."""
    chars = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))[numbers[:, None] // 26 ** np.arange(k) % 26]
    return np.ascontiguousarray(chars).view(f"<U{k}").ravel()


def _bin_codes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct BOLD BINs like ``BOLD:ACW1968``."""
    code = rng.choice(26**3 * 10**4, n, replace=False)
    return np.char.add(np.char.add("BOLD:", _letters(code // 10**4, 3)), np.char.zfill((code % 10**4).astype(str), 4))


def _distinct_1m_indexes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` BIOSCAN-1M indexes, distinct over the first ``BIOSCAN_1M_SIZE`` rows (-1 after them)."""
    out = np.full(n, -1, dtype=np.int64)
    out[: min(n, BIOSCAN_1M_SIZE)] = rng.choice(BIOSCAN_1M_SIZE, min(n, BIOSCAN_1M_SIZE), replace=False)
    return out


def _most_specific(ranks: pd.DataFrame) -> pd.Series:
    """Each row's most specific known rank, column by column (a row-wise bfill is a Python call per row)."""
    taxon = ranks["species"]
    for rank in ("genus", "subfamily", "family", "order"):
        taxon = taxon.fillna(ranks[rank])
    return taxon


def build_metadata(
    rng: np.random.Generator,
    tree: Tree,
    species: np.ndarray,
    depth: np.ndarray,
    split: np.ndarray,
    barcodes: np.ndarray | pd.api.extensions.ExtensionArray,
    photo: dict[str, np.ndarray],
) -> pd.DataFrame:
    """One row per specimen, in the dataset's column order and dtypes. ``photo``: the three photo
    measurement columns (image_measurement_value, area_fraction, scale_factor), unrounded."""
    n = len(species)
    path = tree.species_path()
    genus = path["genus"][species]

    # processid: project code + running number + "-" + year; sampleid: plate and well.
    projects = _letters(rng.choice(26**5, _PROJECTS_PER_DATASET, replace=False), 5)
    project = rng.integers(0, len(projects), n)
    first_number = rng.integers(100, 3000, len(projects))
    running = pd.Series(project).groupby(project).cumcount().to_numpy() + first_number[project]
    processid = pd.Series(projects[project]) + running.astype(str) + "-" + rng.integers(19, 24, n).astype(str)
    plate = rng.integers(10000, 90000) + np.arange(n) // 95
    well = np.arange(n) % 95
    sampleid = (
        "BIOUG"
        + pd.Series(plate.astype(str))
        + "-"
        + np.array(list("ABCDEFGH"))[well // 12]
        + pd.Series(np.char.zfill((well % 12 + 1).astype(str), 2))
    )

    def rank(names: np.ndarray, known: np.ndarray) -> pd.Series:
        return pd.Series(np.where(known, names, None), dtype="string")

    subfamily_known = (depth >= GENUS) | ((depth == FAMILY) & (rng.random(n) < 0.3))
    ranks = pd.DataFrame(
        {
            "phylum": pd.Series(["Arthropoda"] * n, dtype="string"),
            "class": pd.Series(["Insecta"] * n, dtype="string"),
            "order": rank(tree.orders[path["order"][species]], np.ones(n, bool)),
            "family": rank(tree.families[path["family"][species]], depth >= FAMILY),
            "subfamily": rank(tree.genus_subfamily[genus], subfamily_known),
            "genus": rank(tree.genera[genus], depth >= GENUS),
            "species": rank(tree.species[species], depth >= SPECIES),
        }
    )
    taxon = _most_specific(ranks)

    bins = pd.Series(_bin_codes(rng, len(tree.species))[species], dtype="string")
    home = rng.choice(len(REGIONS), len(tree.genera), p=[r[4] for r in REGIONS])[genus]
    region = np.where(rng.random(n) < 0.75, home, rng.choice(len(REGIONS), n, p=[r[4] for r in REGIONS]))
    country, province, lat, lon, _ = (np.array(col)[region] for col in zip(*REGIONS))
    located = rng.random(n) >= 0.03
    # BIOSCAN-1M indexes are distinct: past its 1.13 M records, only the first 1.13 M rows may hold one.
    in_1m = (rng.random(n) < 0.2) & (np.arange(n) < BIOSCAN_1M_SIZE)

    table = pd.DataFrame(
        {
            "processid": processid,
            "sampleid": sampleid,
            "taxon": taxon,
            **ranks,
            "dna_bin": bins.where(rng.random(n) >= 0.02),
            "dna_barcode": barcodes,
            "country": country,
            "province_state": np.where(rng.random(n) < 0.97, province, None),
            "coord-lat": np.where(located, np.round(lat.astype(float) + rng.normal(0, 0.8, n), 3), np.nan),
            "coord-lon": np.where(located, np.round(lon.astype(float) + rng.normal(0, 0.8, n), 3), np.nan),
            "image_measurement_value": np.round(photo["image_measurement_value"], 1),
            "area_fraction": np.round(photo["area_fraction"], 6),
            "scale_factor": np.round(photo["scale_factor"], 4),
            "inferred_ranks": rng.choice(3, n, p=(0.9, 0.07, 0.03)),
            "split": split,
            "index_bioscan_1M_insect": pd.array(np.where(in_1m, _distinct_1m_indexes(rng, n), -1)),
        }
    )
    table["index_bioscan_1M_insect"] = table["index_bioscan_1M_insect"].astype("Int64").where(in_1m)
    chunks = [md5_chunk(pid, s) or None for pid, s in zip(table["processid"], table["split"])]
    table["chunk"] = pd.Series(chunks, dtype="string")
    return table.astype(METADATA_DTYPES)
