"""Supervised evaluation of DNA representations, as in the BIOSCAN-5M DNA benchmark.

* ``unseen_species_split`` (``clibd.data.species_split``): the held-out-species protocol (one
  species per multi-species genus, or family, becomes unseen; seen species' samples are halved into
  keys and queries).
* ``nn_macro_top1``: cosine 1-NN of queries against keys, macro top-1 per rank (the
  paper's "1-NN genus accuracy of unseen species" is ``rank="genus"`` on unseen queries);
  ``hit_macro_top1`` scores nearest keys found another way (alignment).
* ``linear_probe``: logistic regression on frozen embeddings of seen species.
* ``embed_batches``: embeddings of a tower (``DnaTower``: masked mean of the last layer);
  ``kmer_count_vectors``: the alignment-free k-mer baseline.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.data.kmer_counts import token_counts

# The protocol's split lives with the data (a reference library calibrates itself by it too);
# re-exported here, where the benchmark's callers import it.
from clibd.data.species_split import (  # noqa: F401
    ROLE_KEY,
    ROLE_SEEN,
    ROLE_UNSEEN,
    UNSEEN_RANKS,
    unseen_species_split,
)
from clibd.eval.metrics import topk_accuracy
from clibd.taxonomy import label_codes


def nearest_key(queries: np.ndarray | sp.spmatrix, keys: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Position in ``keys`` of each query's cosine nearest neighbour (exact, brute force)."""
    search = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(keys)
    return search.kneighbors(queries, return_distance=False)[:, 0]


def nn_macro_top1(
    query_emb: np.ndarray | sp.spmatrix,
    key_emb: np.ndarray | sp.spmatrix,
    query_taxa: pd.DataFrame,
    key_taxa: pd.DataFrame,
    ranks: Sequence[str],
) -> dict[str, float]:
    """Cosine 1-NN macro top-1 of queries against keys at each of ``ranks`` (``clibd.eval.metrics``)."""
    hit = nearest_key(query_emb, key_emb)
    return hit_macro_top1(query_taxa, key_taxa.iloc[hit], ranks)


def hit_macro_top1(query_taxa: pd.DataFrame, hit_taxa: pd.DataFrame, ranks: Sequence[str]) -> dict[str, float]:
    """Macro top-1 at each of ``ranks`` of queries whose nearest keys have ``hit_taxa`` (row for row)."""
    codes = label_codes(pd.concat([query_taxa[list(ranks)], hit_taxa[list(ranks)]]), tuple(ranks))
    query_codes, hit_codes = codes[: len(query_taxa)], codes[len(query_taxa) :]
    scores = topk_accuracy(query_codes, hit_codes[:, None, :], ks=(1,), ranks=tuple(ranks))
    return {rank: scores["macro"][rank]["top1"] for rank in ranks}


def linear_probe(
    train_emb: np.ndarray, train_labels: Sequence, test_emb: np.ndarray, test_labels: Sequence, seed: int = 0
) -> float:
    """Micro accuracy of a logistic-regression probe fitted on frozen (standardised) embeddings."""
    mean, std = train_emb.mean(0), train_emb.std(0) + 1e-6
    probe = LogisticRegression(max_iter=1000, random_state=seed)
    probe.fit((train_emb - mean) / std, np.asarray(train_labels))
    return float((probe.predict((test_emb - mean) / std) == np.asarray(test_labels)).mean())


def kmer_count_vectors(sequences: Sequence[str], k: int) -> sp.csr_matrix:
    """Overlapping (stride 1) ACGT k-mer counts per sequence, ``[n, 4^k]`` sparse.

    K-mers holding N or another non-ACGT letter are not counted.
    """
    longest = max(len(s) for s in sequences)
    tokenizer = KmerTokenizer(k=k, max_nucleotides=max(longest, k), stride=1)
    return token_counts(sequences, tokenizer)[:, tokenizer.kmer_offset :]


@torch.no_grad()
def embed_batches(
    encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ids: np.ndarray,
    mask: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """``encode(ids, mask)`` over row batches (e.g. ``DnaTower``, ``CLIBDModel.encode_dna``), float32."""
    out = []
    for start in range(0, len(ids), batch_size):
        batch_ids = torch.as_tensor(ids[start : start + batch_size], dtype=torch.long, device=device)
        batch_mask = torch.as_tensor(mask[start : start + batch_size], dtype=torch.long, device=device)
        out.append(encode(batch_ids, batch_mask).float().cpu())
    return torch.cat(out).numpy()
