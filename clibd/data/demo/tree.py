"""A simulated tree of life: orders > families > (subfamilies) > genera > species.

Sizes are imbalanced the way malaise-trap catches are: a few orders hold most
specimens, and within every node the children's abundances are log-normal. Traits of
any kind (barcodes, body plans) are inherited down the tree with ``descend``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from clibd.data.demo.names import ORDERS, latin_names, placeholder_species

# Species kinds: a proper binomial, a BOLD interim (placeholder) name, or never named.
NAMED, PLACEHOLDER, DARK = 0, 1, 2
KIND_SHARES = (0.55, 0.27, 0.18)


@dataclass(frozen=True)
class Tree:
    orders: np.ndarray  # [O] names
    order_weight: np.ndarray  # [O] share of specimens
    families: np.ndarray  # [F] names
    family_order: np.ndarray  # [F] parent index
    genera: np.ndarray  # [G] names
    genus_family: np.ndarray  # [G]
    genus_subfamily: np.ndarray  # [G] subfamily name or None (families without subfamilies)
    species: np.ndarray  # [S] full species name, None for never-named (dark) species
    species_genus: np.ndarray  # [S]
    species_kind: np.ndarray  # [S] NAMED | PLACEHOLDER | DARK
    species_weight: np.ndarray  # [S] expected share of specimens

    @property
    def parents(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Parent index of each family, genus and species (the levels traits descend through)."""
        return self.family_order, self.genus_family, self.species_genus

    def species_path(self) -> dict[str, np.ndarray]:
        """Index of each species' genus, family and order."""
        genus = self.species_genus
        family = self.genus_family[genus]
        return {"order": self.family_order[family], "family": family, "genus": genus}


def descend(tree: Tree, order_values: np.ndarray, step: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    """Inherit per-order values down to species: each level copies its parent's values
    and applies ``step(values, level)`` (level 0 = family, 1 = genus, 2 = species)."""
    values = order_values
    for level, parent in enumerate(tree.parents):
        values = step(values[parent], level)
    return values


def _children(
    rng: np.random.Generator, parent_weight: np.ndarray, n: int, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` children spread over parents (at least one each, more for heavier parents);
    children's weights are log-normal and sum to their parent's."""
    n = max(n, len(parent_weight))
    share = parent_weight**0.7 / np.sum(parent_weight**0.7)
    parent = np.repeat(np.arange(len(parent_weight)), 1 + rng.multinomial(n - len(parent_weight), share))
    raw = rng.lognormal(0.0, sigma, len(parent))
    return parent, raw / np.bincount(parent, raw)[parent] * parent_weight[parent]


def build_tree(rng: np.random.Generator, n_species: int, n_orders: int) -> Tree:
    order_names, order_share = map(np.array, zip(*ORDERS[:n_orders]))
    order_weight = order_share / order_share.sum()
    n_genera = max(2 * n_orders, round(n_species / 3))
    family_order, family_weight = _children(rng, order_weight, max(2 * n_orders, round(n_genera / 3)), 0.8)
    genus_family, genus_weight = _children(rng, family_weight, n_genera, 0.8)
    species_genus, species_weight = _children(rng, genus_weight, n_species, 1.0)

    families = np.array(latin_names(rng, len(family_order), "family"))
    genera = np.array(latin_names(rng, len(genus_family), "genus"))
    # Half the families are split into 2-3 subfamilies; each genus sits in one of them.
    n_sub = np.where(rng.random(len(families)) < 0.5, rng.integers(2, 4, len(families)), 0)
    subfamilies = np.array(latin_names(rng, int(n_sub.sum()), "subfamily") + [None], dtype=object)
    first_sub = np.concatenate([[0], np.cumsum(n_sub)[:-1]])
    pick = first_sub[genus_family] + (rng.random(len(genera)) * n_sub[genus_family]).astype(int)
    genus_subfamily = subfamilies[np.where(n_sub[genus_family] > 0, pick, -1)]

    kind = rng.choice(3, len(species_genus), p=KIND_SHARES)
    species = np.full(len(species_genus), None, dtype=object)
    named, placeholder = kind == NAMED, kind == PLACEHOLDER
    epithets = np.array(latin_names(rng, int(named.sum()), "epithet"), dtype=object)
    species[named] = genera[species_genus[named]].astype(object) + " " + epithets
    species[placeholder] = placeholder_species(rng, genera[species_genus[placeholder]])
    return Tree(
        orders=order_names,
        order_weight=order_weight,
        families=families,
        family_order=family_order,
        genera=genera,
        genus_family=genus_family,
        genus_subfamily=genus_subfamily,
        species=species,
        species_genus=species_genus,
        species_kind=kind,
        species_weight=species_weight,
    )
