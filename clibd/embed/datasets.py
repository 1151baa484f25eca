"""Embeddings of a specimen table's roles with the model's towers: split across processes,
gathered in table order, cached on disk by checkpoint, table, role and modality.
``embed_roles`` is what evaluation and reference-library building share."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather
from torch.utils.data import DataLoader, Dataset, Subset

from clibd.config import Config
from clibd.data.dataset import SpecimenDataset
from clibd.data.roles import select_role
from clibd.data.text import encode_taxonomy
from clibd.embed.encoder import InferenceEncoder, resolve_dtype
from clibd.progress import progress as progress_bar

CACHE_VERSION = 1
# The source column each modality's input comes from; rows without it are left out of that modality.
INPUT_COLUMN = {"image": "image_ref", "dna": "dna_barcode", "text": None}


def table_hash(table: pd.DataFrame) -> str:
    """Content hash of a specimen table (values, column names and order; not the index)."""
    digest = hashlib.sha256("\0".join(map(str, table.columns)).encode())
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def shard(n: int, rank: int, world: int) -> range:
    """Contiguous rows of process ``rank``: shard sizes differ by at most one."""
    return range(rank * n // world, (rank + 1) * n // world)


def _identity(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


@torch.inference_mode()
def embed_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    modality: str,
    batch_size: int,
    state: PartialState,
    num_workers: int = 0,
    encoder: Optional[InferenceEncoder] = None,
    progress: bool = True,
) -> np.ndarray:
    """float32 ``[len(dataset), D]`` embeddings in dataset order, on every process.

    ``dataset.__getitems__(rows)`` returns the batch dict (``SpecimenDataset``), with
    ``index`` = the rows served; a row it drops (a bad record under ``bad_records=skip``)
    stays NaN. Each process of ``state`` (``PartialState()``, or the Accelerator) embeds a
    contiguous shard on the model's device; the shards are padded to equal length, gathered,
    and the padding dropped, so every rank gets the same array as a single-process run.
    ``encoder`` (default: the model as it is in fp32 on a CPU, bf16 on a GPU) is built once
    per evaluation to set precision and compile (:class:`clibd.embed.encoder.InferenceEncoder`).
    """
    world, rank = state.num_processes, state.process_index
    device = next(model.parameters()).device
    n, dim = len(dataset), int(model.cfg.embed_dim)
    rows = shard(n, rank, world)
    loader = DataLoader(Subset(dataset, rows), batch_size=batch_size, collate_fn=_identity, num_workers=num_workers)
    local = torch.full((len(rows), dim), float("nan"), device=device)
    was_training = model.training
    model.eval()
    encode = encoder or InferenceEncoder(model, device)
    for batch in progress_bar(loader, desc=f"embed {modality}", disable=not progress or rank != 0, leave=False):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if len(batch["index"]):
            local[batch["index"] - rows.start] = encode(batch, modality)
    model.train(was_training)
    if world == 1:
        return local.cpu().numpy()
    longest = -(-n // world)
    padded = torch.zeros((longest, dim), device=device, dtype=torch.float32)
    padded[: len(local)] = local
    gathered = gather(padded).reshape(world, longest, dim).cpu()
    return torch.cat([gathered[r, : len(shard(n, r, world))] for r in range(world)]).numpy()


def cached_embeddings(
    cache_dir: str | Path, key: dict[str, Any], compute: Callable[[], np.ndarray], state: PartialState
) -> np.ndarray:
    """Load ``<cache_dir>/embeddings/<hash of key>.npy`` or compute it (on every process: the
    work is distributed) and let the main process write it atomically, with the key beside."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "embeddings" / f"{name}.npy"
    hit = path.is_file()
    if state.num_processes > 1:
        hit = broadcast_object_list([hit])[0]  # every rank takes the same branch
    if hit:
        return np.load(path)
    emb = compute()
    if state.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, emb)
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps(key, indent=1, sort_keys=True))
    return emb


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


def _dataset(
    cfg: Config, model: torch.nn.Module, rows: pd.DataFrame, modality: str
) -> tuple[Dataset, np.ndarray | None]:
    """A dataset serving ``modality``'s batch keys, and for text the map from rows to
    distinct strings (text is embedded once per distinct taxonomy string)."""
    if modality == "text":
        text = model.cfg.text
        enc = encode_taxonomy(rows, model.text_tokenizer, text.template, text.missing_word, text.max_length)
        return _DistinctText(enc.ids, enc.mask), enc.inverse
    if modality == "dna":
        return SpecimenDataset(rows, cfg.data, dna_tokenizer=model.dna_tokenizer), None
    return SpecimenDataset(rows, cfg.data, image_size=model.cfg.image.image_size), None


def eval_encoder(cfg: Config, model: torch.nn.Module, freeze: Optional[bool] = None) -> InferenceEncoder:
    """The ``eval.precision`` / ``eval.compile`` encoder of ``model`` (it copies and compiles at
    its first batch only: nothing is done when every embedding comes from the cache)."""
    device = next(model.parameters()).device
    return InferenceEncoder(model, device, cfg.eval.precision, cfg.eval.compile, cfg.eval.batch_size, freeze=freeze)


def embed_role(
    cfg: Config,
    model: torch.nn.Module,
    role: str,
    rows: pd.DataFrame,
    modality: str,
    encoder: InferenceEncoder,
    state: PartialState,
    model_hash: Optional[str] = None,
) -> np.ndarray:
    """Embeddings of ``rows`` (all of which must have the modality's input) with one tower,
    through ``encoder``; cached under ``cfg.data.cache_dir`` when ``model_hash`` names the weights."""

    def compute() -> np.ndarray:
        dataset, inverse = _dataset(cfg, model, rows, modality)
        emb = embed_dataset(
            model,
            dataset,
            modality,
            cfg.eval.batch_size,
            state,
            num_workers=cfg.data.num_workers if modality == "image" else 0,
            encoder=encoder,
        )
        return emb if inverse is None else emb[inverse]

    if model_hash is None:
        return compute()
    device = next(model.parameters()).device
    key = {
        "version": CACHE_VERSION,
        "checkpoint": model_hash,
        "table": table_hash(rows),
        "role": role,
        "modality": modality,
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "eval_resize": cfg.data.eval_resize,
        "image_pipeline": cfg.data.image_pipeline,
        "precision": str(resolve_dtype(cfg.eval.precision, device)),
        "compile": cfg.eval.compile,
    }
    return cached_embeddings(cfg.data.cache_dir, key, compute, state)


def embed_roles(
    cfg: Config,
    model: torch.nn.Module,
    tables: dict[str, pd.DataFrame],
    modalities: Sequence[str],
    state: PartialState,
    model_hash: Optional[str] = None,
    encoder: Optional[InferenceEncoder] = None,
) -> tuple[dict[str, dict[str, tuple[np.ndarray, pd.DataFrame]]], dict[str, dict[str, dict[str, int]]]]:
    """``{role: {modality: (embeddings, rows)}}`` (``rows``: the embedded specimens' table
    rows, whose rank columns are the labels), and the specimens left out of a modality,
    counted ``{role: {modality: {reason: n}}}`` and warned: no input for it (e.g. no
    barcode), or a bad record the dataset skipped (``data.bad_records=skip``). ``encoder``
    (default: :func:`eval_encoder`) serves every role, so its copy and compiled towers are made
    once, and only if something is not in the embedding cache."""
    out: dict[str, dict[str, tuple[np.ndarray, pd.DataFrame]]] = {}
    left_out: dict[str, dict[str, dict[str, int]]] = {}
    encoder = encoder or eval_encoder(cfg, model)
    for role, rows in tables.items():
        for modality in modalities:
            has_input = _has_input(rows, modality)
            subset = rows[has_input].reset_index(drop=True)
            emb = embed_role(cfg, model, role, subset, modality, encoder, state, model_hash)
            served = ~np.isnan(emb).any(axis=1)
            reasons = {"no input": int((~has_input).sum()), "skipped bad record": int((~served).sum())}
            reasons = {reason: n for reason, n in reasons.items() if n}
            if reasons:
                left_out.setdefault(role, {})[modality] = reasons
                warnings.warn(f"{role}: {reasons} of {len(rows)} specimens left out of {modality}", stacklevel=2)
            out.setdefault(role, {})[modality] = (emb[served], subset[served].reset_index(drop=True))
    return out, left_out
