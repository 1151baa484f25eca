"""Evaluate a model on a configured dataset: embed every role with every tower (cached,
split across processes), then the retrieval protocol (``clibd.eval.retrieval``) or zero-shot
clustering (``clibd.eval.clustering``). ``run_evaluation`` is what ``python train.py`` calls at
the end and what ``python eval.py`` runs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from clibd.config import Config
from clibd.data.sources import read_specimens
from clibd.embed.datasets import embed_roles, role_tables
from clibd.embed.encoder import InferenceEncoder
from clibd.embed.run_dir import checkpoint_hash
from clibd.eval.clustering import cluster_ami, cluster_report
from clibd.eval.dna_benchmark import kmer_count_vectors
from clibd.eval.embedding_map import write_embedding_map
from clibd.eval.fused import with_fused_features
from clibd.eval.retrieval import evaluate_retrieval, write_results
from clibd.taxonomy import EVAL_RANKS


def _modalities(cfg: Config, model: torch.nn.Module, wanted: Optional[Sequence[str]] = None) -> list[str]:
    wanted = list(wanted or cfg.eval.modalities)
    unknown = [m for m in wanted if m not in model.modalities]
    if unknown:
        raise ValueError(f"modalities {unknown} are not enabled in this model (it has {list(model.modalities)})")
    return wanted


def run_evaluation(
    cfg: Config,
    model: torch.nn.Module,
    out_dir: str | Path,
    split: str = "test",
    *,
    state: PartialState,
    checkpoint: Optional[str | Path] = None,
    embedding_map: bool = False,
    encoder: Optional[InferenceEncoder] = None,
) -> dict:
    """Retrieval evaluation of ``model`` on ``split`` (test | val): seen and unseen queries
    against all keys, every enabled query modality x key modality. Writes results.json/md,
    accuracy.png and per_class_accuracy.csv into ``out_dir`` and returns the results dict
    (with ``"meta"``). Every process of ``state`` (``PartialState()`` or the Accelerator) embeds;
    the main process searches, scores and writes, and every process gets the results.
    ``checkpoint`` (the saved model directory) enables the embedding cache; ``encoder`` (e.g.
    one kept across validations) replaces the one built from ``eval.precision``/``eval.compile``.
    ``embedding_map``: also the 2-D UMAP map of the queries (``clibd.eval.embedding_map``; off
    for per-epoch validation, it costs a UMAP fit)."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, got {split!r}")
    table, skips = read_specimens(cfg.data)
    roles = {"keys": "keys", "seen": f"{split}_seen", "unseen": f"{split}_unseen"}
    tables, empty = _non_empty(role_tables(cfg, table, list(roles.values())), cfg, split)
    model_hash = checkpoint_hash(checkpoint) if checkpoint is not None else None
    lazy: Optional[Callable[[], InferenceEncoder]] = (lambda: encoder) if encoder is not None else None
    embedded, missing = embed_roles(cfg, model, tables, _modalities(cfg, model), state, model_hash, lazy)
    queries = {name: embedded[role] for name, role in roles.items() if name != "keys" and role in tables}
    keys, pairs = embedded["keys"], None
    if cfg.eval.fused_pairs:
        queries, keys, pairs = with_fused_features(queries, keys)
    document = None
    if state.is_main_process:  # search and score once; the other processes receive the results
        retrieval = evaluate_retrieval(queries, keys, ks=cfg.eval.ks, index_kind=cfg.eval.index, pairs=pairs)
        meta = {
            "checkpoint": str(checkpoint) if checkpoint is not None else None,
            "checkpoint_hash": model_hash,
            "dataset": f"{cfg.data.format}:{cfg.data.root}",
            "split": split,
            "roles": {name: list(getattr(cfg.data.splits, role)) for name, role in roles.items()},
            "counts": retrieval.counts,
            "left_out": missing,
            "empty_roles": empty,
            "skipped_records": skips.as_dict(),
        }
        write_results(retrieval.results, meta, out_dir, retrieval.per_class)
        if embedding_map:
            write_embedding_map(queries, out_dir, seed=cfg.train.seed)
        document = {"meta": meta, **retrieval.results}
    return _from_main(document, state)


def _non_empty(tables: dict[str, pd.DataFrame], cfg: Config, split: str) -> tuple[dict[str, pd.DataFrame], dict]:
    """The roles that have rows, and the empty ones with their splits (warned, then left out).

    Keys and at least one query role are needed; a missing query role only loses its column
    of the table (and the harmonic mean)."""
    empty = {role: list(getattr(cfg.data.splits, role)) for role, rows in tables.items() if not len(rows)}
    if "keys" in empty or len(empty) == len(tables) - 1:
        raise ValueError(f"nothing to evaluate on {split}: no rows in roles {empty} (data.splits names their splits)")
    for role, splits in empty.items():
        warnings.warn(
            f"role {role} (splits {splits}) has no rows: its queries are left out of the evaluation", stacklevel=3
        )
    return {role: rows for role, rows in tables.items() if len(rows)}, empty


def _from_main(value: Any, state: PartialState) -> Any:
    return value if state.num_processes == 1 else broadcast_object_list([value])[0]


def run_clustering(
    cfg: Config,
    model: torch.nn.Module,
    out_dir: str | Path,
    split: str = "test",
    modalities: Optional[Sequence[str]] = None,
    kmer_k: int = 4,
    *,
    state: PartialState,
    checkpoint: Optional[str | Path] = None,
) -> dict:
    """Zero-shot clustering AMI per rank of the split's seen + unseen queries, embedded with
    each tower, plus a k-mer-count baseline on the barcodes. Writes clustering.json/.md."""
    table, _ = read_specimens(cfg.data)
    tables = role_tables(cfg, table, [f"{split}_seen", f"{split}_unseen"])
    rows = pd.concat(list(tables.values()), ignore_index=True)
    model_hash = checkpoint_hash(checkpoint) if checkpoint is not None else None
    wanted = _modalities(cfg, model, modalities or [m for m in model.modalities if m != "text"])
    embedded, missing = embed_roles(cfg, model, {f"{split}_seen+unseen": rows}, wanted, state, model_hash)
    scores: dict[str, dict[str, float]] = {}
    if state.is_main_process:
        for modality, (emb, labels) in next(iter(embedded.values())).items():
            scores[modality] = cluster_ami(emb, labels, seed=cfg.train.seed)
        barcodes = rows[rows["dna_barcode"].notna()]
        if len(barcodes):
            counts = kmer_count_vectors(barcodes["dna_barcode"].tolist(), kmer_k)
            scores[f"{kmer_k}-mer counts"] = cluster_ami(counts, barcodes[list(EVAL_RANKS)], seed=cfg.train.seed)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "checkpoint": str(checkpoint) if checkpoint else None,
            "split": split,
            "specimens": len(rows),
            "left_out": missing,
        }
        ami = {
            name: {rank: None if np.isnan(v) else v for rank, v in by_rank.items()} for name, by_rank in scores.items()
        }
        (out / "clustering.json").write_text(json.dumps({"meta": meta, "ami": ami}, indent=2) + "\n")
        (out / "clustering.md").write_text(f"# Zero-shot clustering AMI (%), {split}\n\n" + cluster_report(scores))
    return {"ami": _from_main(scores, state)}
