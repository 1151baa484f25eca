"""COI-like barcodes evolved down the tree, then read with sequencer artefacts.

Bases are coded A=0, G=1, C=2, T=3 so a transition (A<->G, C<->T) is ``x ^ 1``.
Third codon positions evolve fastest and site rates are gamma-distributed, as in real COI.
Substitutions follow HKY: transitions ``KAPPA`` times as likely as transversions, the new
base drawn towards the lineage's own base composition, whose AT share drifts down the tree
(real insect COI is 60-76 % AT, and lineages differ). Every lineage also carries its own
rate, inherited and multiplied at each level, so some genera are fast and some slow.

Calibrated against real BOLD insect barcodes (docs/architecture.md, "Demo data"): genera are
not tidy clusters. Per-node branch lengths are gamma with a small shape, so sister species
range from near-identical to as far apart as genera (deep splits); some species hold two
deep haplotype lineages; pairwise distances saturate between families and orders.
"""

from __future__ import annotations

import numpy as np

from clibd.data.demo.tree import Tree

BARCODE_LENGTH = 658  # the standard COI-5P barcode region
_UPSTREAM_SITES = 40  # sequence before the region, read by reads starting early
_EXTRA_SITES = 100  # sequence beyond the region, read by over-long reads
_TRAILING_N_MAX = 20
BLOCK = 1 << 15  # rows mutated at once (the demo's few thousand haplotypes are one block)
_LETTERS = np.frombuffer(b"AGCT", dtype=np.uint8)
_IUPAC = np.frombuffer(b"RYKMSWBDHV", dtype=np.uint8)
_A_SHARE_OF_AT, _G_SHARE_OF_GC = 0.44, 0.49  # A / (A + T), G / (G + C) of real COI

# Branch length (expected substitutions per site at an average site) from the root to an
# order, then per family, genus, species; a haplotype's own, and a species' second lineage.
# Species branches are the longest: congeneric species differ by ~12 % (median pair), as in BOLD.
ORDER_BRANCH = 0.15
LEVEL_BRANCHES = (0.04, 0.09, 0.11)
BRANCH_SHAPE = (1.0, 2.0, 1.0)  # gamma shape of each node's branch (mean 1): 1 = from very short to long
RATE_SIGMA = 0.3  # log-normal spread of the lineage rate, multiplied in at every level
HAPLOTYPE_BRANCH = 0.007  # per haplotype, times an exponential(1): most are near-identical
DEEP_LINEAGE_SHARE, DEEP_LINEAGE_BRANCH = 0.15, 0.06  # species with a second lineage, how far it is
KAPPA = 2.0  # transition / transversion rate ratio
# AT share a lineage evolves towards: the root's, drifting per family, genus and species. Drift
# within genera makes 4-mer profiles (composition) a poorer guide to kinship than 8-mers, as in BOLD.
ROOT_AT, LEVEL_AT_SD = 0.68, (0.0, 0.2, 0.15)


def site_rates(rng: np.random.Generator, n_sites: int) -> np.ndarray:
    """Relative substitution rate per site (mean 1): codon position x gamma(0.5)."""
    codon = np.array([0.35, 0.12, 2.53])[np.arange(n_sites) % 3]
    return codon * rng.gamma(0.5, 2.0, n_sites)


def base_frequencies(at: np.ndarray) -> np.ndarray:
    """Equilibrium frequencies [N, 4] (A, G, C, T) of lineages with AT share ``at`` [N]."""
    at = np.clip(at, 0.3, 0.9)[:, None]
    return np.hstack(
        [at * _A_SHARE_OF_AT, (1 - at) * _G_SHARE_OF_GC, (1 - at) * (1 - _G_SHARE_OF_GC), at * (1 - _A_SHARE_OF_AT)]
    )


def mutate(
    rng: np.random.Generator, seqs: np.ndarray, branch: np.ndarray, rates: np.ndarray, freqs: np.ndarray
) -> np.ndarray:
    """Substitute each site with probability 1 - exp(-branch * rate) (``branch`` [N, 1]); the new
    base is drawn from the lineage's ``freqs`` [N, 4], transitions weighted by ``KAPPA``.

    Rows go in blocks of ``BLOCK`` (~13 B of temporaries per site and row: 0.35 GB a block), so
    millions of haplotypes fit in memory; up to ``BLOCK`` rows draw exactly as one block."""
    out = seqs.copy()
    for start in range(0, len(seqs), BLOCK):
        rows = slice(start, start + BLOCK)
        block = out[rows]  # a view: changed in place
        row, site = np.nonzero(rng.random(block.shape, dtype=np.float32) < -np.expm1(-branch[rows] * rates))
        current = block[row, site]
        weight = freqs[rows][row] * np.where(np.arange(4) == (current ^ 1)[:, None], KAPPA, 1.0)
        weight[np.arange(len(row)), current] = 0.0
        cumulative = np.cumsum(weight, axis=1)
        pick = (cumulative < rng.random(len(row))[:, None] * cumulative[:, -1:]).sum(1)
        block[row, site] = pick.astype(np.uint8)
    return out


def evolve(rng: np.random.Generator, tree: Tree, haplotype_species: np.ndarray) -> np.ndarray:
    """Base codes [H, sites] of each haplotype, descended root > order > ... > species > haplotype."""
    n_sites = _UPSTREAM_SITES + BARCODE_LENGTH + _EXTRA_SITES
    rates = site_rates(rng, n_sites)
    n_orders = len(tree.orders)
    at = np.full(n_orders, ROOT_AT)
    root = rng.choice(4, n_sites, p=base_frequencies(np.array([ROOT_AT]))[0]).astype(np.uint8)
    speed = rng.lognormal(0.0, RATE_SIGMA, n_orders)
    branch = ORDER_BRANCH * speed * rng.gamma(BRANCH_SHAPE[0], 1 / BRANCH_SHAPE[0], n_orders)
    seqs = mutate(rng, np.tile(root, (n_orders, 1)), branch[:, None], rates, base_frequencies(at))
    for level, parent in enumerate(tree.parents):  # family, genus, species
        n = len(parent)
        at = at[parent] + rng.normal(0.0, LEVEL_AT_SD[level], n)
        speed = speed[parent] * rng.lognormal(0.0, RATE_SIGMA, n)
        branch = LEVEL_BRANCHES[level] * speed * rng.gamma(BRANCH_SHAPE[level], 1 / BRANCH_SHAPE[level], n)
        seqs = mutate(rng, seqs[parent], branch[:, None], rates, base_frequencies(at))
    # Some species hold a second, deep lineage; a third of their haplotypes belong to it.
    deep = mutate(rng, seqs, DEEP_LINEAGE_BRANCH * speed[:, None], rates, base_frequencies(at))
    second = (rng.random(len(seqs)) < DEEP_LINEAGE_SHARE)[haplotype_species] & (
        rng.random(len(haplotype_species)) < 1 / 3
    )
    lineage = seqs[haplotype_species]  # [H, sites]: filled in place, no second copy of its size
    lineage[second] = deep[haplotype_species[second]]
    hap_branch = HAPLOTYPE_BRANCH * speed[haplotype_species] * rng.gamma(1.0, 1.0, len(haplotype_species))
    return mutate(rng, lineage, hap_branch[:, None], rates, base_frequencies(at[haplotype_species]))


def read_barcodes(rng: np.random.Generator, codes: np.ndarray) -> np.ndarray:
    """One read per specimen of its haplotype ``codes`` [N, sites]: starting at the region or
    a little before or after it (so reads of one species sit in different frames), ending
    at the region's end or short of it, a few over-long; leading N runs, inner N runs
    (often a codon's worth), rare ambiguity codes, trailing Ns. Returns an array of str."""
    n, n_sites = codes.shape
    width = n_sites + _TRAILING_N_MAX
    start = _UPSTREAM_SITES + _pick_start(rng, n)
    end = _UPSTREAM_SITES + _pick_end(rng, n)
    chars = np.zeros((n, width), dtype=np.uint8)
    chars[:, :n_sites] = _LETTERS[codes]
    col = np.arange(width)[None, :]

    leading = np.where(rng.random(n) < 0.14, np.exp(rng.uniform(0, np.log(150), n)).astype(int), 0)
    chars[(col >= start[:, None]) & (col < (start + leading)[:, None])] = ord("N")
    for _ in range(3):  # up to three inner N runs in a fifth of the reads
        length = rng.choice([1, 3, 6, 12], n, p=(0.25, 0.55, 0.15, 0.05))
        run_start = start + (rng.random(n) * (end - start - length)).astype(int)
        run = (rng.random(n) < 0.09)[:, None] & (col >= run_start[:, None]) & (col < (run_start + length)[:, None])
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


def _pick_start(rng: np.random.Generator, n: int) -> np.ndarray:
    """Read start relative to the region (as in real BOLD reads): at it 52 %, one base in 20 %,
    10-19 bases in 13 %, 20-120 in 7 %, up to 40 bases before it 8 %."""
    choice = rng.choice(5, n, p=(0.52, 0.20, 0.13, 0.07, 0.08))
    options = np.stack(
        [
            np.zeros(n, dtype=int),
            np.ones(n, dtype=int),
            rng.integers(10, 20, n),
            np.exp(rng.uniform(np.log(20), np.log(120), n)).astype(int),
            -np.exp(rng.uniform(0, np.log(_UPSTREAM_SITES), n)).astype(int),
        ]
    )
    return options[choice, np.arange(n)]


def _pick_end(rng: np.random.Generator, n: int) -> np.ndarray:
    """Read end relative to the region's start: the full region 33 %, near 590 30 %, anywhere in
    540-657 29 %, partial (300-540) 5 %, over-long 3 %."""
    choice = rng.choice(5, n, p=(0.33, 0.30, 0.29, 0.05, 0.03))
    options = np.stack(
        [
            np.full(n, BARCODE_LENGTH),
            np.clip(rng.normal(590, 12, n), 540, BARCODE_LENGTH - 1).astype(int),
            rng.integers(540, BARCODE_LENGTH, n),
            rng.integers(300, 540, n),
            rng.integers(BARCODE_LENGTH + 1, BARCODE_LENGTH + _EXTRA_SITES + 1, n),
        ]
    )
    return options[choice, np.arange(n)]
