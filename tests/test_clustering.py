"""clibd.eval.clustering: AMI of UMAP + agglomerative clusters, and the k-mer baseline on real barcodes."""

import math

import numpy as np
import pandas as pd
import pytest

from clibd.eval.clustering import cluster_ami, cluster_report
from clibd.eval.dna_benchmark import kmer_count_vectors
from tests.data_paths import BOLD_4K, needs_shared_data


def _blobs(n: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    codes = rng.integers(classes, size=n)
    return 5 * np.eye(32)[codes] + 0.3 * rng.normal(size=(n, 32)), codes


@pytest.mark.slow  # UMAP's numba compilation: ~15-30 s in a fresh process on 2 cores
def test_separated_clusters_score_near_one_and_noise_near_zero() -> None:
    rng = np.random.default_rng(0)
    emb, codes = _blobs(300, 8, rng)
    labels = pd.DataFrame(
        {
            "genus": pd.array([f"G{c // 2}" for c in codes], dtype="string"),
            "species": pd.array([f"S{c}" if c != 7 else None for c in codes], dtype="string"),
        }
    )
    ami = cluster_ami(emb, labels, ranks=("genus", "species"), n_components=5)
    assert ami["species"] > 0.95  # species 7 unknown: clustered without those rows
    # Genus merges pairs of equidistant blobs: UMAP keeps no global distances, so only partial.
    assert 0.2 < ami["genus"] < 0.95
    noise = cluster_ami(rng.normal(size=(300, 32)), labels, ranks=("species",), n_components=5)
    assert abs(noise["species"]) < 0.1


@pytest.mark.slow
def test_single_class_and_unlabelled_ranks() -> None:
    emb, _ = _blobs(20, 2, np.random.default_rng(1))
    labels = pd.DataFrame({"order": ["O1"] * 20, "species": pd.array([None] * 19 + ["S1"], dtype="string")})
    ami = cluster_ami(emb, labels, ranks=("order", "species"), n_components=3)
    assert ami["order"] == 1.0 and math.isnan(ami["species"])


def test_bad_input_is_refused_before_umap() -> None:
    emb, _ = _blobs(20, 2, np.random.default_rng(1))
    labels = pd.DataFrame({"order": ["O1"] * 20})
    with pytest.raises(ValueError, match="20 embeddings for 19 label rows"):
        cluster_ami(emb, labels.iloc[1:], ranks=("order",))
    with pytest.raises(ValueError, match=r"lack rank columns \['genus'\]"):
        cluster_ami(emb, labels, ranks=("genus",))
    assert cluster_report({"kmer-6": {"genus": 0.5, "species": float("nan")}}) == (
        "| embedding | genus | species |\n|---|---|---|\n| kmer-6 | 50.0 | - |\n"
    )


@pytest.mark.slow
@needs_shared_data
def test_kmer_baseline_groups_real_barcodes_by_genus() -> None:
    table = pd.read_csv(BOLD_4K, sep="\t")
    genera = table["genus_name"].value_counts().index[:10]
    sample = table[table["genus_name"].isin(genera)].groupby("genus_name").head(12).reset_index(drop=True)
    labels = pd.DataFrame({"genus": sample["genus_name"].astype("string")})
    counts = kmer_count_vectors(sample["nucleotides"].tolist(), k=6)
    ami = cluster_ami(counts, labels, ranks=("genus",), n_components=10)
    shuffled = labels.sample(frac=1, random_state=0).reset_index(drop=True)
    chance = cluster_ami(counts, shuffled, ranks=("genus",), n_components=10)
    assert ami["genus"] > 0.6, ami  # measured 0.80 on this sample
    assert abs(chance["genus"]) < 0.15, chance
