"""The retrieval evaluation of one run, built once and run on any number of weights.

``RetrievalEvaluator(cfg, split, state=...)`` reads the specimen table once (or takes the one
training already read), keeps the role tables of the split (keys, seen and unseen queries),
the label vocabulary they share and one :class:`~clibd.embed.encoder.InferenceEncoder`, and
``run(model, out_dir)`` embeds every role with every enabled tower, searches and scores them
(``clibd.eval.retrieval``), writes the results files and returns flat metrics
(``"image->dna/macro/species/top1/seen": x, ..., "mean_top1": x``), as big_vision's
evaluators do. Validation during training, ``python eval.py`` and the evaluation after
training all go through it.

Every process of ``state`` embeds its share; the main process searches, scores and writes,
and every process gets the metrics.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, get_args

import pandas as pd
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from clibd.config import Config, EvalSplit
from clibd.data.bad_records import SkipReport
from clibd.data.sources import read_specimens
from clibd.embed.datasets import embed_roles, eval_encoder, role_tables
from clibd.embed.encoder import InferenceEncoder
from clibd.embed.run_dir import checkpoint_hash
from clibd.eval.embedding_map import write_embedding_map
from clibd.eval.fused import with_fused_features
from clibd.eval.retrieval import evaluate_retrieval, flat_metrics, label_vocabulary, write_results
from clibd.taxonomy import EVAL_RANKS

SPLITS = get_args(EvalSplit)


def enabled_modalities(cfg: Config, model: Any, wanted: Optional[Sequence[str]] = None) -> list[str]:
    """``wanted`` (default ``cfg.eval.modalities``), each of which the model must have."""
    wanted = list(wanted or cfg.eval.modalities)
    unknown = [m for m in wanted if m not in model.modalities]
    if unknown:
        raise ValueError(f"modalities {unknown} are not enabled in this model (it has {list(model.modalities)})")
    return wanted


def from_main(value: Any, state: PartialState) -> Any:
    """The main process's ``value`` on every process."""
    return value if state.num_processes == 1 else broadcast_object_list([value])[0]


class RetrievalEvaluator:
    """Seen and unseen queries of ``split`` (test | val) against all keys, every enabled query
    modality x key modality (and the fused image+DNA pairs with ``eval.fused_pairs``).

    ``table``/``skips``: the specimen table when the caller has read it already (training).
    ``weights_change``: ``run`` will be given new weights of the same model each time
    (validation during training): the encoder is then compiled once, unfrozen, and takes the
    new weights at every run instead of being rebuilt.
    """

    def __init__(
        self,
        cfg: Config,
        split: str = "test",
        *,
        state: PartialState,
        table: Optional[pd.DataFrame] = None,
        skips: Optional[SkipReport] = None,
        weights_change: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if table is None:
            table, skips = read_specimens(cfg.data)
        self.cfg, self.split, self.state = cfg, split, state
        self.skips = skips or SkipReport()
        self.weights_change = weights_change
        self.roles = {"keys": "keys", "seen": f"{split}_seen", "unseen": f"{split}_unseen"}
        tables = role_tables(cfg, table, list(self.roles.values()))  # keyed by role: keys, <split>_seen, ...
        self.empty_roles = self._empty_roles(tables)
        self.tables = {role: rows for role, rows in tables.items() if len(rows)}
        # One name -> code mapping per rank for every run: a class means the same name everywhere.
        self.vocabulary = label_vocabulary(list(self.tables.values()), EVAL_RANKS, cfg.eval.unlabelled)
        self.encoder: Optional[InferenceEncoder] = None
        self.document: Optional[dict] = None  # the last run's results.json content (with "meta")

    def _empty_roles(self, tables: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
        """Roles without rows, with their splits (warned, then left out). Keys and at least one
        query role are needed; a missing query role only loses its column (and the harmonic mean)."""
        splits = self.cfg.data.splits
        empty = {role: list(getattr(splits, role)) for role, rows in tables.items() if not len(rows)}
        if "keys" in empty or len(empty) == len(tables) - 1:
            raise ValueError(
                f"nothing to evaluate on {self.split}: no rows in roles {empty} (data.splits names their splits)"
            )
        for role, names in empty.items():
            warnings.warn(
                f"role {role} (splits {names}) has no rows: its queries are left out of the evaluation", stacklevel=3
            )
        return empty

    def _encoder_for(self, model: torch.nn.Module) -> InferenceEncoder:
        if self.encoder is None or not self.weights_change:
            self.encoder = eval_encoder(self.cfg, model, freeze=False if self.weights_change else None)
        else:
            self.encoder.refresh(model)
        return self.encoder

    def run(
        self,
        model: torch.nn.Module,
        out_dir: str | Path,
        *,
        checkpoint: Optional[str | Path] = None,
        embedding_map: bool = False,
    ) -> dict[str, float]:
        """Evaluate ``model``; write results.json/md, accuracy.png and per_class_accuracy.csv into
        ``out_dir`` (and with ``embedding_map`` the UMAP map of the queries, which costs a UMAP
        fit); return the flat metrics. ``checkpoint`` (the saved model directory) enables the
        embedding cache."""
        cfg, state = self.cfg, self.state
        model_hash = checkpoint_hash(checkpoint) if checkpoint is not None else None
        modalities = enabled_modalities(cfg, model)
        tokenizer = getattr(model, "dna_tokenizer", None)
        if "dna" in modalities and tokenizer is not None and tokenizer.cleaning != cfg.data.dna_cleaning:
            warnings.warn(
                f"the model was trained on barcodes cleaned as {tokenizer.cleaning!r}: evaluating with that "
                f"(data.dna_cleaning={cfg.data.dna_cleaning!r} applies to training)",
                stacklevel=2,
            )
        encoder = self._encoder_for(model)
        embedded, missing = embed_roles(cfg, model, self.tables, modalities, state, model_hash, encoder)
        queries = {name: embedded[role] for name, role in self.roles.items() if name != "keys" and role in embedded}
        keys, pairs = embedded["keys"], None
        if cfg.eval.fused_pairs:
            queries, keys, pairs = with_fused_features(queries, keys)
        document = None
        if state.is_main_process:  # search and score once; the other processes receive the results
            retrieval = evaluate_retrieval(
                queries,
                keys,
                ks=cfg.eval.ks,
                index_kind=cfg.eval.index,
                pairs=pairs,
                vocabulary=self.vocabulary,
                unlabelled=cfg.eval.unlabelled,
            )
            meta = {
                "checkpoint": str(checkpoint) if checkpoint is not None else None,
                "checkpoint_hash": model_hash,
                "dataset": f"{cfg.data.format}:{cfg.data.root}",
                "split": self.split,
                "roles": {name: list(getattr(cfg.data.splits, role)) for name, role in self.roles.items()},
                "counts": retrieval.counts,
                "left_out": missing,
                "empty_roles": self.empty_roles,
                "skipped_records": self.skips.as_dict(),
                "unlabelled": cfg.eval.unlabelled,  # how a query without a label was scored
            }
            write_results(retrieval.results, meta, out_dir, retrieval.per_class)
            if embedding_map:
                write_embedding_map(queries, out_dir, seed=cfg.train.seed)
            document = {"meta": meta, **retrieval.results}
        self.document = from_main(document, state)
        return flat_metrics(self.document)
