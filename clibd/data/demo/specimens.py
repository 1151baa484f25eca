"""Specimens of the simulated species, their haplotypes, identification depth and split.

The split follows BIOSCAN-5M's rules (docs/datasets.md, "Splits and roles"), applied to what was
identified: records without a species label are ``pretrain``; properly named species
are split over ``train`` / ``val`` / ``test``; placeholder-named species of a seen
genus with at least 8 samples are split over ``key_unseen`` / ``val_unseen`` /
``test_unseen``; other placeholder species are ``other_heldout``. Splitting is done per
barcode group, so records sharing a barcode always share a split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clibd.data.demo.tree import DARK, NAMED, PLACEHOLDER, Tree

UNSEEN_MIN_SAMPLES = 8
# Minimum specimens per species kind, so that every role has material to work with.
MIN_NAMED, MIN_UNSEEN_CANDIDATE = 6, 10
# Labelled specimens guaranteed per kind before the rest are labelled at random.
MIN_LABELLED_NAMED = 5
LABELLED_FRACTION = 0.5
# Seen species with fewer labelled samples stay in train (as rare species do in BIOSCAN-5M).
MIN_SEEN_FOR_QUERIES = 5
# Cumulative share (at a barcode group's midpoint) where val, then test begins.
SEEN_CUTS = (0.6, 0.72)  # train / val / test
UNSEEN_CUTS = (0.5, 0.72)  # key_unseen / val_unseen / test_unseen
# Identification depth of unlabelled (pretrain) records: order, family, genus.
PRETRAIN_DEPTH_SHARES = (0.15, 0.55, 0.30)
ORDER, FAMILY, GENUS, SPECIES = 0, 1, 2, 3


def specimen_counts(rng: np.random.Generator, tree: Tree, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Specimens per species (summing to ``n``) and how many of them to identify to species."""
    kind = tree.species_kind
    genus_named = np.bincount(tree.species_genus, weights=kind == NAMED, minlength=len(tree.genera)) > 0
    candidate = (kind == PLACEHOLDER) & genus_named[tree.species_genus] & (rng.random(len(kind)) < 0.6)
    minimum = np.where(kind == NAMED, MIN_NAMED, np.where(candidate, MIN_UNSEEN_CANDIDATE, 1))
    if minimum.sum() > n:
        raise ValueError(f"{n} specimens are too few for a tree of {len(kind)} species: need at least {minimum.sum()}")
    total = minimum + rng.multinomial(n - minimum.sum(), tree.species_weight / tree.species_weight.sum())
    sure = np.minimum(total, np.where(kind == NAMED, MIN_LABELLED_NAMED, np.where(candidate, UNSEEN_MIN_SAMPLES, 0)))
    labelled = sure + rng.binomial(total - sure, LABELLED_FRACTION)
    return total, np.where(kind == DARK, 0, labelled)


def haplotypes(rng: np.random.Generator, total: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Species and haplotype of each specimen, and the species of each haplotype.

    Each species has a few common haplotypes and a tail of rare ones, so some
    specimens share their barcode exactly, as in BIOSCAN."""
    n_hap = np.maximum(1, np.round(total * rng.uniform(0.3, 0.7, len(total)))).astype(int)
    species = np.repeat(np.arange(len(total)), total)
    local = np.floor(n_hap[species] * rng.random(len(species)) ** 1.6).astype(int)
    first = np.concatenate([[0], np.cumsum(n_hap)[:-1]])
    return species, first[species] + local, np.repeat(np.arange(len(total)), n_hap)


def barcode_groups(haplotype: np.ndarray, barcode: np.ndarray) -> np.ndarray:
    """Connected groups of records linked by a shared haplotype or an identical read."""
    group = pd.Series(haplotype)
    while True:
        merged = group.groupby(barcode).transform("min").groupby(haplotype).transform("min")
        if merged.equals(group):
            return group.to_numpy()
        group = merged


def assign_splits(
    rng: np.random.Generator, tree: Tree, species: np.ndarray, group: np.ndarray, labelled_target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split name and identification depth of each specimen.

    Per species, its barcode groups are taken in random order; the first groups (up to
    ``labelled_target`` specimens) are identified to species, the rest only higher up."""
    groups, first, inverse, size = np.unique(group, return_index=True, return_inverse=True, return_counts=True)
    g_species = species[first]
    order = np.lexsort((rng.random(len(groups)), g_species))
    cum = np.cumsum(size[order])
    start = np.searchsorted(g_species[order], g_species[order])  # first position of each species
    before = np.empty(len(groups), dtype=int)
    before[order] = cum - size[order] - np.concatenate([[0], cum])[start]
    labelled = before < labelled_target[g_species]
    n_labelled = np.bincount(g_species, weights=size * labelled, minlength=len(tree.species))
    share = (before + size / 2) / np.maximum(n_labelled[g_species], 1)

    kind = tree.species_kind[g_species]
    seen_genus = (
        np.bincount(
            tree.species_genus, weights=(tree.species_kind == NAMED) & (n_labelled > 0), minlength=len(tree.genera)
        )
        > 0
    )
    unseen = (
        (kind == PLACEHOLDER)
        & seen_genus[tree.species_genus[g_species]]
        & (n_labelled[g_species] >= UNSEEN_MIN_SAMPLES)
    )
    few = n_labelled[g_species] < MIN_SEEN_FOR_QUERIES
    split = np.select(
        [
            ~labelled,
            (kind == NAMED) & (few | (share < SEEN_CUTS[0])),
            (kind == NAMED) & (share < SEEN_CUTS[1]),
            kind == NAMED,
            unseen & (share < UNSEEN_CUTS[0]),
            unseen & (share < UNSEEN_CUTS[1]),
            unseen,
        ],
        ["pretrain", "train", "val", "test", "key_unseen", "val_unseen", "test_unseen"],
        "other_heldout",
    )[inverse]
    depth = np.where(split == "pretrain", rng.choice(3, len(species), p=PRETRAIN_DEPTH_SHARES), SPECIES)
    return split, depth
