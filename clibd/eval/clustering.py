"""Zero-shot clustering (the BIOSCAN-5M paper's second benchmark).

Embeddings -> UMAP (seeded, cosine) -> agglomerative clustering (Ward) with as many
clusters as true classes at the rank -> adjusted mutual information with the true labels.
UMAP is fitted once on all rows; each rank then clusters the rows whose label at that
rank is known.
The DNA baseline embeds barcodes as overlapping k-mer count vectors
(``clibd.eval.dna_benchmark.kmer_count_vectors``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_mutual_info_score

from clibd.taxonomy import EVAL_RANKS


def reduce_umap(
    emb: np.ndarray | sp.spmatrix, n_components: int = 50, n_neighbors: int = 15, metric: str = "cosine", seed: int = 0
) -> np.ndarray:
    """Seeded UMAP to ``n_components`` (capped at n - 2, UMAP's spectral-init limit)."""
    from umap import UMAP  # heavy import (numba): only when clustering

    if not sp.issparse(emb):  # UMAP takes sparse k-mer counts as they are
        emb = np.asarray(emb, dtype=np.float32)
    if emb.shape[0] < 4:
        raise ValueError(f"clustering needs at least 4 rows, got {emb.shape[0]}")
    reducer = UMAP(
        n_components=min(n_components, emb.shape[0] - 2),
        n_neighbors=min(n_neighbors, emb.shape[0] - 1),
        min_dist=0.0,
        metric=metric,
        random_state=seed,
        n_jobs=1,  # a seeded UMAP runs on one thread anyway
    )
    return reducer.fit_transform(emb)


def cluster_ami(
    emb: np.ndarray | sp.spmatrix,
    labels: pd.DataFrame,
    ranks: Sequence[str] = EVAL_RANKS,
    n_components: int = 50,
    n_neighbors: int = 15,
    metric: str = "cosine",
    seed: int = 0,
) -> dict[str, float]:
    """``{rank: AMI}`` of agglomerative clusters of the UMAP-reduced ``emb`` against ``labels[rank]``.

    A rank with fewer than 2 labelled rows gets NaN.
    """
    if emb.shape[0] != len(labels):
        raise ValueError(f"{emb.shape[0]} embeddings for {len(labels)} label rows")
    missing = [r for r in ranks if r not in labels.columns]
    if missing:
        raise ValueError(f"labels lack rank columns {missing}")
    reduced = reduce_umap(emb, n_components, n_neighbors, metric, seed)
    return {rank: _ami(reduced, labels[rank]) for rank in ranks}


def _ami(reduced: np.ndarray, truth: pd.Series) -> float:
    known = truth.notna().to_numpy()
    if known.sum() < 2:
        return float("nan")
    codes, classes = pd.factorize(truth[known])
    n_clusters = min(len(classes), int(known.sum()))
    if n_clusters < 2:
        return 1.0  # one class: any single cluster is exact
    predicted = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(reduced[known])
    return float(adjusted_mutual_info_score(codes, predicted))


def cluster_report(scores: dict[str, dict[str, float]]) -> str:
    """Markdown table of AMI (%) per embedding (rows) and rank (columns)."""
    ranks = list(next(iter(scores.values()))) if scores else []
    lines = ["| embedding | " + " | ".join(ranks) + " |", "|" + "---|" * (len(ranks) + 1)]
    for name, by_rank in scores.items():
        cells = ["-" if np.isnan(v) else f"{100 * v:.1f}" for v in by_rank.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
