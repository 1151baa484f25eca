"""COI-like barcodes evolved down the tree, then read with sequencer artefacts.

Bases are coded A=0, G=1, C=2, T=3 so a transition (A<->G, C<->T) is ``x ^ 1``.
Third codon positions evolve fastest and site rates are gamma-distributed, as in
real COI; the root is AT-rich. Branch lengths (expected substitutions per site at an
average site) are set so that pairwise identity is ~98-99 % within a species, ~90-95 %
between congeneric species and falls further between genera, families and orders.
"""

from __future__ import annotations

import numpy as np

from clibd.data.demo.tree import Tree, descend

BARCODE_LENGTH = 658  # the standard COI-5P barcode region
_EXTRA_SITES = 32  # sequence beyond the region, read by over-long reads
_TRAILING_N_MAX = 20
_LETTERS = np.frombuffer(b"AGCT", dtype=np.uint8)
_IUPAC = np.frombuffer(b"RYKMSWBDHV", dtype=np.uint8)
_COMPOSITION = (0.29, 0.16, 0.16, 0.39)  # A, G, C, T

# Branch length from the root to an order, then per family, genus, species, haplotype.
ORDER_BRANCH = 0.16
LEVEL_BRANCHES = (0.09, 0.07, 0.045)
HAPLOTYPE_BRANCH = 0.007


def site_rates(rng: np.random.Generator, n_sites: int) -> np.ndarray:
    """Relative substitution rate per site (mean 1): codon position x gamma(0.5)."""
    codon = np.array([0.35, 0.12, 2.53])[np.arange(n_sites) % 3]
    return codon * rng.gamma(0.5, 2.0, n_sites)


def mutate(rng: np.random.Generator, seqs: np.ndarray, branch: float | np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Substitute each site with probability 1 - exp(-branch * rate); 2/3 transitions.
    ``branch`` is one length, or one per sequence ([N, 1])."""
    hit = rng.random(seqs.shape, dtype=np.float32) < -np.expm1(-branch * rates)
    transition = rng.random(seqs.shape, dtype=np.float32) < 2 / 3
    swap = np.where(transition, 1, rng.integers(2, 4, seqs.shape, dtype=np.uint8)).astype(np.uint8)
    return np.where(hit, seqs ^ swap, seqs)


def evolve(rng: np.random.Generator, tree: Tree, haplotype_species: np.ndarray) -> np.ndarray:
    """Base codes [H, sites] of each haplotype, descended root > order > ... > species > haplotype."""
    n_sites = BARCODE_LENGTH + _EXTRA_SITES
    rates = site_rates(rng, n_sites)
    root = rng.choice(4, n_sites, p=_COMPOSITION).astype(np.uint8)
    orders = mutate(rng, np.tile(root, (len(tree.orders), 1)), ORDER_BRANCH, rates)
    # Branch lengths vary per node (gamma, mean as set): some sister species are close.
    species = descend(tree, orders, lambda seqs, level: mutate(
        rng, seqs, LEVEL_BRANCHES[level] * rng.gamma(2.0, 0.5, (len(seqs), 1)), rates))
    return mutate(rng, species[haplotype_species], HAPLOTYPE_BRANCH, rates)


def read_barcodes(rng: np.random.Generator, codes: np.ndarray) -> np.ndarray:
    """One read per specimen of its haplotype ``codes`` [N, sites]: mostly the full 658 nt,
    some trimmed or partial, a few over-long; occasional N runs, rare ambiguity codes,
    and trailing Ns. Returns an array of str."""
    n, n_sites = codes.shape
    width = n_sites + _TRAILING_N_MAX
    start = np.where(rng.random(n) < 0.9, 0, rng.integers(1, 30, n))
    end = _pick_end(rng, n, n_sites)
    chars = np.zeros((n, width), dtype=np.uint8)
    chars[:, :n_sites] = _LETTERS[codes]
    col = np.arange(width)[None, :]

    run_start = start + (rng.random(n) * (end - start - 20)).astype(int)
    run_end = run_start + rng.integers(1, 21, n)
    run = (rng.random(n) < 0.06)[:, None] & (col >= run_start[:, None]) & (col < run_end[:, None])
    chars[run] = ord("N")
    ambiguous = np.flatnonzero(rng.random(n) < 0.03)  # one ambiguity code in 3 % of reads
    site = start[ambiguous] + (rng.random(len(ambiguous)) * (end - start)[ambiguous]).astype(int)
    chars[ambiguous, site] = rng.choice(_IUPAC, len(ambiguous))
    trailing = np.where(rng.random(n) < 0.12, rng.integers(1, _TRAILING_N_MAX + 1, n), 0)
    tail = (col >= end[:, None]) & (col < (end + trailing)[:, None])
    chars[tail] = ord("N")
    chars[(col < start[:, None]) | (col >= (end + trailing)[:, None])] = 0
    # Shift each read to the left edge; numpy's fixed-width bytes drop the trailing zeros.
    shifted = np.take_along_axis(chars, np.minimum(col + start[:, None], width - 1), axis=1)
    shifted[col >= (end + trailing - start)[:, None]] = 0
    return np.char.decode(np.ascontiguousarray(shifted).view(f"S{width}").ravel(), "ascii")


def _pick_end(rng: np.random.Generator, n: int, n_sites: int) -> np.ndarray:
    """Read end per specimen: full region 58 %, a little short 30 %, partial 7 %, over-long 5 %."""
    choice = rng.choice(4, n, p=(0.58, 0.30, 0.07, 0.05))
    options = np.stack([
        np.full(n, BARCODE_LENGTH),
        BARCODE_LENGTH - rng.integers(1, 58, n),
        rng.integers(350, 600, n),
        rng.integers(BARCODE_LENGTH + 1, n_sites + 1, n),
    ])
    return options[choice, np.arange(n)]
