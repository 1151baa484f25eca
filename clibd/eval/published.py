"""Score the original CLIBD's released embeddings with our retrieval protocol.

Layout (written by ``scripts/inference_and_eval.py`` of bioscan-ml/clibd, read back by the same
script): ``extracted_feature_from_<split>_split.hdf5`` holds groups ``seen``, ``unseen`` (the
queries) and ``key`` (seen and unseen keys together), each with ``[n, d]`` datasets among
``encoded_image_feature``, ``encoded_dna_feature``, ``encoded_language_feature``,
``averaged_feature`` (mean of the image and DNA features), ``concatenated_feature`` (image then
DNA, 2d) and, in ``key`` only, ``all_key_features`` (image, DNA and text keys stacked: 3n rows).
The labels are not in it: ``labels_<split>.json`` beside it holds ``seen_gt_dict``,
``unseen_gt_dict`` and ``key_gt_dict``, lists of ``{"order", "family", "genus", "species"}`` in
row order.

Our modality names: image, dna, text, image_dna_mean, image_dna_concat, and ``all`` (keys only).
Every query kind is scored against every key kind of the same width, as the original does.
The labels name a missing rank ``not_classified``; read as missing, they are scored as the original
scores them (a class of its own, ``unlabelled="class"``) unless ``unlabelled="drop"``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import numpy as np
import pandas as pd

from clibd.config import Unlabelled
from clibd.eval.retrieval import UNLABELLED_CLASS, Labelled, RetrievalResults, evaluate_retrieval, write_results
from clibd.taxonomy import EVAL_RANKS

FEATURES = {
    "encoded_image_feature": "image",
    "encoded_dna_feature": "dna",
    "encoded_language_feature": "text",
    "averaged_feature": "image_dna_mean",
    "concatenated_feature": "image_dna_concat",
    "all_key_features": "all",
}
# hdf5 group -> (our role, key in the labels json)
GROUPS = {"seen": ("seen", "seen_gt_dict"), "unseen": ("unseen", "unseen_gt_dict"), "key": ("keys", "key_gt_dict")}


def default_labels_path(hdf5_path: str | os.PathLike) -> Path:
    """``labels_<split>.json`` beside ``extracted_feature_from_<split>_split.hdf5``."""
    path = Path(hdf5_path)
    match = re.fullmatch(r"extracted_feature_from_(\w+?)_split\.hdf5", path.name)
    if match is None:
        raise ValueError(f"{path}: not named extracted_feature_from_<split>_split.hdf5; pass the labels file")
    return path.with_name(f"labels_{match.group(1)}.json")


def _labels(records: Sequence[dict], where: str) -> pd.DataFrame:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{where}: expected a list of {{order, family, genus, species}} records")
    frame = pd.DataFrame.from_records(records)
    missing = [rank for rank in EVAL_RANKS if rank not in frame.columns]
    if missing and len(frame):
        raise ValueError(f"{where}: records lack the ranks {missing}")
    frame = frame.reindex(columns=list(EVAL_RANKS)).astype("string")
    return frame.mask(frame.eq(UNLABELLED_CLASS).fillna(False).astype(bool))


def read_published(hdf5_path: str | os.PathLike, labels_path: str | os.PathLike) -> dict[str, dict[str, Labelled]]:
    """``{"seen"|"unseen"|"keys": {modality: (embeddings, labels)}}`` from the original's files."""
    labels_doc = json.loads(Path(labels_path).read_text())
    out: dict[str, dict[str, Labelled]] = {}
    with h5py.File(hdf5_path, "r") as handle:
        for group, (role, label_key) in GROUPS.items():
            if group not in handle:
                raise ValueError(f"{hdf5_path}: no group {group!r} (found {sorted(handle)})")
            if label_key not in labels_doc:
                raise ValueError(f"{labels_path}: no {label_key!r} (found {sorted(labels_doc)})")
            labels = _labels(labels_doc[label_key], f"{labels_path}: {label_key}")
            out[role] = {}
            for name, modality in FEATURES.items():
                if name not in handle[group]:
                    continue
                # float64, as written (.tolist() features): normalised in float64 as the original (make_prediction)
                emb = np.asarray(handle[group][name][:], dtype=np.float64)
                # all_key_features stacks the image, DNA and text keys: labels repeat three times.
                rows = pd.concat([labels] * 3, ignore_index=True) if name == "all_key_features" else labels
                if emb.ndim != 2 or len(emb) != len(rows):
                    raise ValueError(
                        f"{hdf5_path}: {group}/{name} has shape {emb.shape}, but {labels_path} gives {len(rows)} labels"
                    )
                out[role][modality] = (emb, rows)
    return out


def evaluate_published(
    hdf5_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    labels_path: Optional[str | os.PathLike] = None,
    ks: Sequence[int] = (1, 3, 5),
    index_kind: str = "flat",
    unlabelled: Unlabelled = "class",
) -> dict[str, Any]:
    """Score the file with ``evaluate_retrieval`` (query and key kinds paired by width) and write the results;
    ``unlabelled``: ``class`` scores a missing rank as the original did, ``drop`` leaves it out."""
    labels_path = Path(labels_path) if labels_path else default_labels_path(hdf5_path)
    data = read_published(hdf5_path, labels_path)
    widths = sorted({emb.shape[1] for by_mod in data.values() for emb, _ in by_mod.values()})
    parts: list[RetrievalResults] = []
    for width in widths:
        keys = {m: item for m, item in data["keys"].items() if item[0].shape[1] == width}
        queries = {
            role: {m: item for m, item in data[role].items() if item[0].shape[1] == width}
            for role in ("seen", "unseen")
        }
        queries = {role: by_mod for role, by_mod in queries.items() if by_mod}
        if keys and queries:
            parts.append(evaluate_retrieval(queries, keys, ks=ks, index_kind=index_kind, unlabelled=unlabelled))
    if not parts:
        raise ValueError(f"{hdf5_path}: no query and key features of the same width")
    results = {pair: value for part in parts for pair, value in part.results.items()}
    per_class = pd.concat([part.per_class for part in parts], ignore_index=True)
    meta = {
        "embeddings": str(hdf5_path),
        "labels": str(labels_path),
        "dataset": "published CLIBD embeddings",
        "unlabelled": unlabelled,
        "counts": {
            "queries": {role: {m: len(e) for m, (e, _) in data[role].items()} for role in ("seen", "unseen")},
            "keys": {m: len(e) for m, (e, _) in data["keys"].items()},
        },
    }
    write_results(results, meta, out_dir, per_class)
    return {"meta": meta, **results}
