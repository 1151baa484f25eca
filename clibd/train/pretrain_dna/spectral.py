"""The k-mer embedding table fitted in closed form (``pretrain.objective: kmer_spectral``).

A bag-of-k-mers tower (``model.dna.pooling: kmer_bag``, no layers) embeds a barcode as the mean
of its k-mers' table rows, a linear map of its k-mer count vector. Among such maps of a given
width, the one whose inner products best reproduce those of the tf-idf weighted count vectors
(k-mer counting with rare k-mers weighted up) is their truncated SVD (Eckart-Young): row ``t``
of the table is ``idf[t] * V[t]``, ``V`` the top right singular vectors. So the tower starts
as a compressed k-mer-counting identifier, learned from the barcodes without labels, and
contrastive training refines it. docs/dna_recipe.md has the figures.

A vocabulary of several k-mer patterns (``model.dna.kmer_patterns``) is one block of columns per
pattern. Their tf-idf rows differ in size: k-mers that skip the codons' third bases are shared
widely (low idf), so their block would weigh least though it carries the genus and family
signal. Each block is scaled to the same typical size first (``block_scales``), then by its
pattern's weight (``model.dna.kmer_pattern_weights``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from accelerate import PartialState
from sklearn.preprocessing import normalize
from sklearn.utils.extmath import randomized_svd

from clibd.config import DnaTowerConfig, PretrainConfig
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.data.kmer_counts import token_counts
from clibd.models.kmer_bag import make_kmer_tokenizer
from clibd.train.pretrain_dna.barcodes import DedupReport
from clibd.train.pretrain_dna.mlm import build_mlm, save_checkpoint


def idf_weights(counts: sp.csr_matrix) -> np.ndarray:
    """Per column, scikit-learn's smoothed idf ``log((1 + n) / (1 + df)) + 1`` over the ``n`` rows;
    0 for a column no row holds."""
    n = counts.shape[0]
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    return (np.log((1 + n) / (1 + df)) + 1).astype(np.float32) * (df > 0)


def block_scales(weighted: sp.csr_matrix, column_block: np.ndarray) -> np.ndarray:
    """Per column, 1 / the median norm of its block's part of the rows (over the rows holding any of
    it); ``column_block[j]`` is column ``j``'s block, 0, 1, ...; columns of block -1 keep scale 1."""
    scales = np.ones(weighted.shape[1], dtype=np.float32)
    for block in np.unique(column_block[column_block >= 0]):
        cols = np.flatnonzero(column_block == block)
        part = weighted[:, cols]
        norms = np.sqrt(np.asarray(part.multiply(part).sum(axis=1)).ravel())
        held = norms[norms > 0]
        scales[cols] = 1.0 / float(np.median(held)) if len(held) else 0.0
    return scales


def pattern_blocks(tokenizer: KmerTokenizer) -> Optional[np.ndarray]:
    """Each vocabulary column's pattern block (-1 for the special tokens); None with one pattern."""
    if len(tokenizer.patterns) == 1:
        return None
    sizes = [tokenizer.kmer_offset, *[4**tokenizer.k] * len(tokenizer.patterns)]
    return np.repeat(np.arange(-1, len(tokenizer.patterns)), sizes)


def column_weights(
    counts: sp.csr_matrix, column_block: Optional[np.ndarray] = None, block_weights: Optional[Sequence[float]] = None
) -> np.ndarray:
    """The weight of each token column in the fit: its idf, times its block's scale (``block_scales``)
    and the block's weight (``block_weights[b]``, default 1)."""
    idf = idf_weights(counts)
    if column_block is None:
        return idf
    scales = block_scales((counts @ sp.diags(idf)).tocsr(), column_block)
    if block_weights is not None:
        blocks = int(column_block.max()) + 1
        if len(block_weights) != blocks:
            raise ValueError(f"{len(block_weights)} k-mer pattern weights for {blocks} patterns: give one per pattern")
        scales = scales * np.where(column_block >= 0, np.asarray(block_weights, dtype=np.float32)[column_block], 1.0)
    return idf * scales


def spectral_table(
    counts: sp.csr_matrix,
    width: int,
    seed: int,
    column_block: Optional[np.ndarray] = None,
    block_weights: Optional[Sequence[float]] = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """``[vocab, width]`` table whose bag embeddings are the rank-``width`` SVD of the tf-idf rows
    (weighted by ``column_weights``: with ``column_block``, each block scaled to a common size).

    Fewer barcodes (or distinct k-mers) than ``width`` give a table of that rank, the remaining
    columns zero. Token columns no barcode holds get zero rows: the bag leaves out what it has
    never seen.
    """
    idf = column_weights(counts, column_block, block_weights)
    tfidf = normalize(counts @ sp.diags(idf))
    rank = min(width, counts.shape[0], int((idf > 0).sum()))
    _, singular, vt = randomized_svd(tfidf, rank, n_iter=4, random_state=seed)
    table = np.zeros((counts.shape[1], width), dtype=np.float32)
    table[:, :rank] = idf[:, None] * vt.T
    total = float(tfidf.multiply(tfidf).sum())
    return table, {"rank": rank, "explained_variance": float((singular**2).sum() / total)}


def fit_table(
    embeddings: torch.nn.Embedding,
    barcodes: list[str],
    tokenizer: KmerTokenizer,
    seed: int,
    initializer_range: float,
    pattern_weights: Optional[Sequence[float]] = None,
) -> dict[str, float]:
    """Overwrite ``embeddings`` (the tower's word embeddings) with the fitted table, scaled so its
    used rows have the entry spread of a fresh random table: cosine retrieval ignores the scale,
    the optimiser does not, and the training learning rates then mean what they mean for a
    randomly initialised tower."""
    counts = token_counts(barcodes, tokenizer)
    table, fit = spectral_table(counts, embeddings.embedding_dim, seed, pattern_blocks(tokenizer), pattern_weights)
    used = table[np.abs(table).sum(axis=1) > 0]
    table *= initializer_range / max(float(used.std()), 1e-12)
    with torch.no_grad():
        embeddings.weight.copy_(torch.from_numpy(table))
    return fit


def fit_spectral(
    barcodes: list[str],
    dna_cfg: DnaTowerConfig,
    cfg: PretrainConfig,
    out_dir: str | Path,
    dedup: Optional[DedupReport] = None,
) -> dict[str, Any]:
    """Fit the table on ``barcodes``; write a BertForMaskedLM checkpoint (``model.dna.pretrained``)
    whose word embeddings are it. Every process computes the same table; the main one writes it."""
    tokenizer = make_kmer_tokenizer(dna_cfg)
    torch.manual_seed(cfg.seed)  # the weights the table does not set (positions, norms) as a fresh model's
    mlm = build_mlm(dna_cfg, tokenizer)
    weights = dna_cfg.kmer_pattern_weights or None
    fit = fit_table(mlm.get_input_embeddings(), barcodes, tokenizer, cfg.seed, mlm.config.initializer_range, weights)
    summary = {"objective": "kmer_spectral", "barcodes": len(barcodes), **fit, "steps": 0, "history": []}
    summary["dedup"] = dedup.as_dict() if dedup else None
    if PartialState().is_main_process:
        save_checkpoint(mlm, tokenizer, Path(out_dir), summary)
    PartialState().wait_for_everyone()
    return summary
