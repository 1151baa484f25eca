"""Held-out-species protocol, 1-NN macro top-1, linear probe, and the k-mer baseline on real barcodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clibd.eval.dna_benchmark import (
    ROLE_KEY,
    ROLE_SEEN,
    ROLE_UNSEEN,
    kmer_count_vectors,
    linear_probe,
    nn_macro_top1,
    unseen_species_split,
)

BOLD = Path(__file__).resolve().parents[2] / "shared" / "data" / "dna" / "bold_insecta_4k.tsv"


def _table() -> pd.DataFrame:
    species = ["A a"] * 4 + ["A b"] * 3 + ["A c"] * 2 + ["B d"] * 5 + ["C e"]
    return pd.DataFrame(
        {
            "processid": [f"P{i}" for i in range(len(species))],
            "genus": [s.split()[0] for s in species],
            "species": species,
        }
    ).astype("string")


def test_split_holds_out_one_species_per_multi_species_genus_and_halves_the_rest() -> None:
    table = _table()
    roles = unseen_species_split(table, seed=3)
    unseen = table.loc[roles == ROLE_UNSEEN, "species"].unique()
    assert len(unseen) == 1 and unseen[0].startswith("A ")  # only genus A has 2+ species
    assert (roles[table["species"] == "C e"] == ROLE_KEY).all()  # a single sample is a key
    for name, rows in table[roles != ROLE_UNSEEN].groupby("species"):
        keys = int((roles[rows.index] == ROLE_KEY).sum())
        assert keys == int(np.ceil(len(rows) / 2)), name
        assert (roles[rows.index] == ROLE_SEEN).sum() == len(rows) - keys
    assert unseen_species_split(table, seed=3).equals(roles)


def test_split_refuses_rows_without_species() -> None:
    table = _table()
    table.loc[2, "species"] = pd.NA
    with pytest.raises(ValueError, match="P2"):
        unseen_species_split(table)


def test_nn_macro_top1_averages_per_class() -> None:
    keys = np.array([[1.0, 0.0], [0.0, 1.0]])
    queries = np.array([[1.0, 0.1], [0.9, 0.2], [0.1, 1.0], [1.0, 0.0]])
    key_taxa = pd.DataFrame({"genus": ["x", "y"]})
    query_taxa = pd.DataFrame({"genus": ["x", "x", "x", "y"]})
    # class x: 2/3 right (the third lies nearer y), class y: 0/1 -> macro 1/3 (micro would be 1/2)
    assert nn_macro_top1(queries, keys, query_taxa, key_taxa, ["genus"]) == pytest.approx({"genus": 1 / 3})
    assert nn_macro_top1(queries[:2], keys, query_taxa[:2], key_taxa, ["genus"]) == {"genus": 1.0}


def test_linear_probe_separates_clusters_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 40)
    centres = rng.normal(size=(5, 16)) * 5
    emb = centres[labels] + rng.normal(size=(200, 16))
    train, test = np.arange(200) % 2 == 0, np.arange(200) % 2 == 1
    assert linear_probe(emb[train], labels[train], emb[test], labels[test]) > 0.95
    noise = rng.normal(size=(200, 16))
    assert linear_probe(noise[train], labels[train], noise[test], labels[test]) < 0.4


def test_kmer_baseline_reproduces_the_readme_reference_on_real_barcodes() -> None:
    if not BOLD.is_file():
        pytest.skip(f"shared real-barcode data absent: {BOLD}")
    table = pd.read_csv(BOLD, sep="\t").rename(columns=lambda c: c.removesuffix("_name"))
    roles = unseen_species_split(table, seed=0).to_numpy()
    key, seen, unseen = (roles == r for r in (ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN))
    counts = kmer_count_vectors(table["nucleotides"].tolist(), 8)
    assert counts[0].sum() == len(table["nucleotides"][0]) - 7  # every overlapping 8-mer (ACGT only)
    s = nn_macro_top1(counts[seen], counts[key], table[seen], table[key], ["species"])
    u = nn_macro_top1(counts[unseen], counts[key], table[unseen], table[key], ["genus", "family"])
    # README (k=8): 0.990 / 0.772 / 0.845; the seed of its unseen-species draw is not given.
    assert abs(s["species"] - 0.990) < 0.01
    assert abs(u["genus"] - 0.772) < 0.03
    assert abs(u["family"] - 0.845) < 0.03
