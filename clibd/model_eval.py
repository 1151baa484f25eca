"""Evaluate a model on a configured dataset: embed every role with every tower (cached,
split across processes), then the retrieval protocol (``clibd.evaluation``) or zero-shot
clustering (``clibd.clustering``). ``run_evaluation`` is what ``python train.py`` calls at
the end and what ``python eval.py`` runs."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from clibd.config import Config
from clibd.embed import cached_embeddings, checkpoint_hash, embed_dataset, table_hash
from clibd.inference import InferenceEncoder, resolve_dtype
from clibd.taxonomy import EVAL_RANKS

CACHE_VERSION = 1
# The source column each modality's input comes from; rows without it are left out of that modality.
INPUT_COLUMN = {"image": "image_ref", "dna": "dna_barcode", "text": None}


class _DistinctText(Dataset):
    """Distinct taxonomy strings, pre-tokenised, served as batch dicts."""

    def __init__(self, ids: np.ndarray, mask: np.ndarray) -> None:
        self.ids, self.mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitems__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(rows, dtype=torch.long)
        return {"text_ids": self.ids[index], "text_mask": self.mask[index], "index": index}


def role_tables(cfg: Config, table: pd.DataFrame, roles: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The rows of each role, at most ``cfg.eval.max_per_split`` (a seeded sample, table order kept)."""
    from clibd.data.roles import select_role

    out = {}
    for role in roles:
        rows = select_role(table, cfg.data.splits, role)
        cap = cfg.eval.max_per_split
        if cap is not None and len(rows) > cap:
            rows = rows.sample(n=cap, random_state=cfg.train.seed).sort_index()
        out[role] = rows.reset_index(drop=True)
    return out


def _has_input(rows: pd.DataFrame, modality: str) -> np.ndarray:
    column = INPUT_COLUMN[modality]
    return np.ones(len(rows), dtype=bool) if column is None else rows[column].notna().to_numpy()


def _dataset(cfg: Config, model: torch.nn.Module, rows: pd.DataFrame, modality: str) -> tuple[Dataset, np.ndarray | None]:
    """A dataset serving ``modality``'s batch keys, and for text the map from rows to
    distinct strings (text is embedded once per distinct taxonomy string)."""
    from clibd.data.dataset import SpecimenDataset
    from clibd.data.text import encode_taxonomy

    if modality == "text":
        text = model.cfg.text
        enc = encode_taxonomy(rows, model.text_tokenizer, text.template, text.missing_word, text.max_length)
        return _DistinctText(enc.ids, enc.mask), enc.inverse
    if modality == "dna":
        return SpecimenDataset(rows, cfg.data, dna_tokenizer=model.dna_tokenizer), None
    return SpecimenDataset(rows, cfg.data, image_size=model.cfg.image.image_size), None


def _device(model: torch.nn.Module, accelerator: Any) -> torch.device:
    return accelerator.device if accelerator is not None else next(model.parameters()).device


def embed_role(
    cfg: Config,
    model: torch.nn.Module,
    role: str,
    rows: pd.DataFrame,
    modality: str,
    encoder: Callable[[], InferenceEncoder],
    accelerator: Any = None,
    model_hash: Optional[str] = None,
) -> np.ndarray:
    """Embeddings of ``rows`` (all of which must have the modality's input) with one tower,
    through ``encoder()`` (called only when something is embedded); cached under
    ``cfg.data.cache_dir`` when ``model_hash`` names the weights."""

    def compute() -> np.ndarray:
        dataset, inverse = _dataset(cfg, model, rows, modality)
        emb = embed_dataset(
            model, dataset, modality, cfg.eval.batch_size, accelerator,
            num_workers=cfg.data.num_workers if modality == "image" else 0, encoder=encoder(),
        )
        return emb if inverse is None else emb[inverse]

    if model_hash is None:
        return compute()
    device = _device(model, accelerator)
    key = {
        "version": CACHE_VERSION,
        "checkpoint": model_hash,
        "table": table_hash(rows),
        "role": role,
        "modality": modality,
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "precision": str(resolve_dtype(cfg.eval.precision, device)),
        "compile": cfg.eval.compile,
    }
    return cached_embeddings(cfg.data.cache_dir, key, compute, accelerator)


def embed_roles(
    cfg: Config,
    model: torch.nn.Module,
    tables: dict[str, pd.DataFrame],
    modalities: Sequence[str],
    accelerator: Any = None,
    model_hash: Optional[str] = None,
) -> tuple[dict[str, dict[str, tuple[np.ndarray, pd.DataFrame]]], dict[str, dict[str, dict[str, int]]]]:
    """``{role: {modality: (embeddings, rows)}}`` (``rows``: the embedded specimens' table
    rows, whose rank columns are the labels), and the specimens left out of a modality,
    counted ``{role: {modality: {reason: n}}}`` and warned: no input for it (e.g. no
    barcode), or a bad record the dataset skipped (``data.bad_records=skip``)."""
    out: dict[str, dict[str, tuple[np.ndarray, pd.DataFrame]]] = {}
    left_out: dict[str, dict[str, dict[str, int]]] = {}
    # One encoder for every role: its bf16 copy and compiled towers are made once, and only
    # if something is not in the embedding cache.
    encoder = functools.cache(
        lambda: InferenceEncoder(model, _device(model, accelerator), cfg.eval.precision, cfg.eval.compile, cfg.eval.batch_size)
    )
    for role, rows in tables.items():
        for modality in modalities:
            has_input = _has_input(rows, modality)
            subset = rows[has_input].reset_index(drop=True)
            emb = embed_role(cfg, model, role, subset, modality, encoder, accelerator, model_hash)
            served = ~np.isnan(emb).any(axis=1)
            reasons = {"no input": int((~has_input).sum()), "skipped bad record": int((~served).sum())}
            reasons = {reason: n for reason, n in reasons.items() if n}
            if reasons:
                left_out.setdefault(role, {})[modality] = reasons
                warnings.warn(f"{role}: {reasons} of {len(rows)} specimens left out of {modality}", stacklevel=2)
            out.setdefault(role, {})[modality] = (emb[served], subset[served].reset_index(drop=True))
    return out, left_out


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
    accelerator: Any = None,
    checkpoint: Optional[str | Path] = None,
) -> dict:
    """Retrieval evaluation of ``model`` on ``split`` (test | val): seen and unseen queries
    against all keys, every enabled query modality x key modality. Writes results.json/md,
    accuracy.png and per_class_accuracy.csv into ``out_dir`` and returns the results dict
    (with ``"meta"``). Under ``accelerate launch`` all processes embed; the main process
    searches, scores and writes, and every process gets the results. ``checkpoint`` (the saved model
    directory) enables the embedding cache."""
    from clibd.data.sources import read_specimens
    from clibd.evaluation import evaluate_retrieval, write_results

    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, got {split!r}")
    table, skips = read_specimens(cfg.data)
    roles = {"keys": "keys", "seen": f"{split}_seen", "unseen": f"{split}_unseen"}
    tables = role_tables(cfg, table, list(roles.values()))
    model_hash = checkpoint_hash(checkpoint) if checkpoint is not None else None
    embedded, missing = embed_roles(cfg, model, tables, _modalities(cfg, model), accelerator, model_hash)
    queries = {name: embedded[role] for name, role in roles.items() if name != "keys" and len(tables[role])}
    document = None
    if _is_main(accelerator):  # search and score once; the other processes receive the results
        retrieval = evaluate_retrieval(queries, embedded["keys"], ks=cfg.eval.ks, index_kind=cfg.eval.index)
        meta = {
            "checkpoint": str(checkpoint) if checkpoint is not None else None,
            "checkpoint_hash": model_hash,
            "dataset": f"{cfg.data.format}:{cfg.data.root}",
            "split": split,
            "roles": {name: list(getattr(cfg.data.splits, role)) for name, role in roles.items()},
            "counts": retrieval.counts,
            "left_out": missing,
            "skipped_records": skips.as_dict(),
        }
        write_results(retrieval.results, meta, out_dir, retrieval.per_class)
        document = {"meta": meta, **retrieval.results}
    return _from_main(document, accelerator)


def _is_main(accelerator: Any) -> bool:
    return accelerator is None or accelerator.is_main_process


def _from_main(value: Any, accelerator: Any) -> Any:
    if accelerator is None or accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def run_clustering(
    cfg: Config,
    model: torch.nn.Module,
    out_dir: str | Path,
    split: str = "test",
    modalities: Optional[Sequence[str]] = None,
    kmer_k: int = 4,
    accelerator: Any = None,
    checkpoint: Optional[str | Path] = None,
) -> dict:
    """Zero-shot clustering AMI per rank of the split's seen + unseen queries, embedded with
    each tower, plus a k-mer-count baseline on the barcodes. Writes clustering.json/.md."""
    from clibd.clustering import cluster_ami, cluster_report
    from clibd.data.sources import read_specimens
    from clibd.dna_eval import kmer_count_vectors

    table, _ = read_specimens(cfg.data)
    tables = role_tables(cfg, table, [f"{split}_seen", f"{split}_unseen"])
    rows = pd.concat(list(tables.values()), ignore_index=True)
    model_hash = checkpoint_hash(checkpoint) if checkpoint is not None else None
    wanted = _modalities(cfg, model, modalities or [m for m in model.modalities if m != "text"])
    embedded, missing = embed_roles(cfg, model, {f"{split}_seen+unseen": rows}, wanted, accelerator, model_hash)
    scores: dict[str, dict[str, float]] = {}
    if _is_main(accelerator):
        for modality, (emb, labels) in next(iter(embedded.values())).items():
            scores[modality] = cluster_ami(emb, labels, seed=cfg.train.seed)
        barcodes = rows[rows["dna_barcode"].notna()]
        if len(barcodes):
            counts = kmer_count_vectors(barcodes["dna_barcode"].tolist(), kmer_k)
            scores[f"{kmer_k}-mer counts"] = cluster_ami(counts, barcodes[list(EVAL_RANKS)], seed=cfg.train.seed)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"checkpoint": str(checkpoint) if checkpoint else None, "split": split, "specimens": len(rows),
                "left_out": missing}
        ami = {name: {rank: None if np.isnan(v) else v for rank, v in by_rank.items()} for name, by_rank in scores.items()}
        (out / "clustering.json").write_text(json.dumps({"meta": meta, "ami": ami}, indent=2) + "\n")
        (out / "clustering.md").write_text(f"# Zero-shot clustering AMI (%), {split}\n\n" + cluster_report(scores))
    return {"ami": _from_main(scores, accelerator)}
