"""Zero-shot clustering of a split's queries (``python eval.py --task cluster``): embed the
seen and unseen queries with each tower, cluster (``clibd.eval.clustering``) and score AMI per
rank, beside a k-mer-count baseline on the barcodes. Writes clustering.json/.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState

from clibd.config import SPECIMEN_MODALITIES, Config
from clibd.data.sources import read_specimens
from clibd.embed.datasets import embed_roles, role_tables
from clibd.embed.run_dir import checkpoint_hash
from clibd.eval.clustering import cluster_ami, cluster_report
from clibd.eval.dna_benchmark import kmer_count_vectors
from clibd.eval.evaluator import enabled_modalities, from_main
from clibd.taxonomy import EVAL_RANKS


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
    wanted = enabled_modalities(cfg, model, modalities or [m for m in model.modalities if m in SPECIMEN_MODALITIES])
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
    return {"ami": from_main(scores, state)}
