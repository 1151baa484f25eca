"""The seen/unseen retrieval protocol over embeddings (docs/datasets.md), model-free.

``evaluate_retrieval`` searches, for every query modality against every key modality, the
keys' ``ReferenceIndex`` and scores the labels of the nearest keys with
``clibd.eval.metrics.topk_accuracy``. As published, ``keys`` holds the seen and unseen keys
together (e.g. splits train + key_unseen) and both query roles search all of them; text
keys are the taxonomy-text embeddings of the same key specimens. Labels are coded by name
across queries and keys together, so a class means the same name everywhere.

``results`` schema (fractions in [0, 1], NaN where a rank has no labelled query)::

    {"<query>-><key>": {"seen"|"unseen"|"harmonic_mean":
        {"micro"|"macro": {"order"|"family"|"genus"|"species": {"top1": x, "top3": x, "top5": x}}}}}

``harmonic_mean`` is present when both roles are. ``write_results`` writes results.json
(with a "meta" entry), results.md, accuracy.png and per_class_accuracy.csv.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clibd.eval.metrics import harmonic_mean, per_class_accuracy, topk_accuracy
from clibd.index.faiss_index import ReferenceIndex
from clibd.taxonomy import EVAL_RANKS

ROLES = ("seen", "unseen")
HM = "harmonic_mean"
# (embeddings [n, d], labels DataFrame with one column per rank, names or <NA>)
Labelled = tuple[np.ndarray, pd.DataFrame]


class RetrievalResults(NamedTuple):
    results: dict  # the schema above
    per_class: pd.DataFrame  # pair, role, rank, class, n_queries, top1, top3, ...
    counts: dict  # {"queries": {role: {modality: n}}, "keys": {modality: n}}, for the meta entry


def code_labels(frames: Sequence[pd.DataFrame], ranks: Sequence[str]) -> tuple[list[np.ndarray], dict[str, list[str]]]:
    """Integer codes ``[n, R]`` per frame (``-1`` unknown), shared across frames, and the names per code."""
    table = pd.concat([frame[list(ranks)] for frame in frames], ignore_index=True)
    codes = np.empty((len(table), len(ranks)), dtype=np.int64)
    names = {}
    for j, rank in enumerate(ranks):
        codes[:, j], uniques = pd.factorize(table[rank], sort=True)
        names[rank] = [str(u) for u in uniques]
    bounds = np.cumsum([0] + [len(frame) for frame in frames])
    return [codes[a:b] for a, b in zip(bounds[:-1], bounds[1:])], names


def _check(name: str, item: Labelled, ranks: Sequence[str]) -> None:
    emb, labels = item
    if np.ndim(emb) != 2 or len(emb) != len(labels):
        raise ValueError(f"{name}: embeddings {np.shape(emb)} do not match {len(labels)} label rows")
    missing = [r for r in ranks if r not in labels.columns]
    if missing:
        raise ValueError(f"{name}: labels lack rank columns {missing}")


def evaluate_retrieval(
    queries: Mapping[str, Mapping[str, Labelled]],
    keys: Mapping[str, Labelled],
    ks: Sequence[int] = (1, 3, 5),
    ranks: Sequence[str] = EVAL_RANKS,
    index_kind: str = "flat",
    device: str = "auto",
    pairs: Sequence[tuple[str, str]] | None = None,
) -> RetrievalResults:
    """Score every query modality of every role (``"seen"``, ``"unseen"``) against every key modality.

    ``queries[role][modality] = (embeddings, labels)``; ``keys[modality] = (embeddings, labels)``
    holding seen and unseen keys together. Query and key embeddings of a pair must share a dim.
    ``pairs``: only these (query, key) modality pairs (``clibd.eval.fused``); None = all of them.
    """
    unknown_roles = sorted(set(queries) - set(ROLES))
    if unknown_roles:
        raise ValueError(f"query roles must be among {ROLES}, got {unknown_roles}")
    for role, by_modality in queries.items():
        for modality, item in by_modality.items():
            _check(f"{role} {modality} queries", item, ranks)
    for modality, item in keys.items():
        _check(f"{modality} keys", item, ranks)

    query_items = [(role, modality, item) for role, by_mod in queries.items() for modality, item in by_mod.items()]
    frames = [labels for _, (_, labels) in keys.items()] + [labels for _, _, (_, labels) in query_items]
    codes, names = code_labels(frames, ranks)
    key_codes = dict(zip(keys, codes[: len(keys)]))
    query_codes = codes[len(keys) :]

    k = max(ks)
    results: dict[str, dict] = {}
    tables = []
    wanted = None if pairs is None else set(map(tuple, pairs))
    for key_modality, (key_emb, _) in keys.items():
        if wanted is not None and not any(k == key_modality for _, k in wanted):
            continue
        index = ReferenceIndex(np.shape(key_emb)[1], kind=index_kind, device=device)
        index.add(key_emb, ids=np.arange(len(key_emb)).astype(str))
        # A missing neighbour (approximate search, position -1) gets an all-unknown label row.
        padded_codes = np.vstack([key_codes[key_modality], np.full((1, len(ranks)), -1)])
        for (role, query_modality, (query_emb, _)), q_codes in zip(query_items, query_codes):
            if wanted is not None and (query_modality, key_modality) not in wanted:
                continue
            pair = f"{query_modality}->{key_modality}"
            if np.shape(query_emb)[1] != index.dim:
                raise ValueError(f"{pair}: {role} queries are {np.shape(query_emb)[1]}-d, keys {index.dim}-d")
            _, positions = index.search(query_emb, k)
            neighbours = padded_codes[positions]  # position -1 picks the padding row
            results.setdefault(pair, {})[role] = topk_accuracy(q_codes, neighbours, ks, ranks)
            table = per_class_accuracy(q_codes, neighbours, ks, ranks, names).drop(columns="code")
            tables.append(table.assign(pair=pair, role=role))
    for by_role in results.values():
        if all(role in by_role for role in ROLES):
            by_role[HM] = _harmonic(by_role["seen"], by_role["unseen"])
    # Query-major order (image->image, image->dna, ...), as the paper's table reads.
    query_modalities = dict.fromkeys(modality for _, modality, _ in query_items)
    results = {pair: results[pair] for q in query_modalities for k in keys if (pair := f"{q}->{k}") in results}

    per_class = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if len(per_class):
        per_class = per_class[["pair", "role", *[c for c in per_class.columns if c not in ("pair", "role")]]]
    counts = {
        "queries": {role: {m: len(item[0]) for m, item in by_mod.items()} for role, by_mod in queries.items()},
        "keys": {m: len(item[0]) for m, item in keys.items()},
    }
    return RetrievalResults(results, per_class, counts)


def _harmonic(seen: dict, unseen: dict) -> dict:
    return {
        avg: {
            rank: {top: harmonic_mean(seen[avg][rank][top], unseen[avg][rank][top]) for top in seen[avg][rank]}
            for rank in seen[avg]
        }
        for avg in seen
    }


def validation_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """Flatten to ``{"dna->dna/macro/species/top1/harmonic_mean": x, ...}`` (NaN values and "meta" left out)."""
    flat = {}
    for pair, by_role in results.items():
        if pair == "meta":
            continue
        for role, by_avg in by_role.items():
            for avg, by_rank in by_avg.items():
                for rank, by_top in by_rank.items():
                    for top, value in by_top.items():
                        if not math.isnan(value):
                            flat[f"{pair}/{avg}/{rank}/{top}/{role}"] = float(value)
    return flat


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _cell(results: Mapping, pair: str, role: str, avg: str, rank: str, top: str) -> str:
    value = results[pair].get(role, {}).get(avg, {}).get(rank, {}).get(top, float("nan"))
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def results_markdown(results: Mapping[str, Any], top: str = "top1") -> str:
    """The paper's table (rows query->key; columns rank x seen/unseen/H.M.), macro then micro, in %."""
    pairs = [p for p in results if p != "meta"]
    ranks = list(next(iter(results[pairs[0]].values()))["macro"])[::-1] if pairs else []  # species first
    lines = []
    for avg in ("macro", "micro"):
        lines += [f"## {avg.capitalize()} {top} accuracy (%), seen / unseen / H.M.", ""]
        header = ["query->key"] + [f"{rank} {col}" for rank in ranks for col in ("seen", "unseen", "H.M.")]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for pair in pairs:
            cells = [_cell(results, pair, role, avg, rank, top) for rank in ranks for role in (*ROLES, HM)]
            lines.append("| " + " | ".join([pair, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def accuracy_figure(results: Mapping[str, Any], avg: str = "macro", top: str = "top1") -> Figure:
    """One panel per query->key pair: seen vs unseen (and H.M.) accuracy per rank."""
    pairs = [p for p in results if p != "meta"]
    cols = min(3, max(1, len(pairs)))
    rows = math.ceil(max(1, len(pairs)) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, pair in zip(axes, pairs):
        ranks = list(next(iter(results[pair].values()))[avg])
        x = np.arange(len(ranks))
        roles = [r for r in (*ROLES, HM) if r in results[pair]]
        width = 0.8 / len(roles)
        for i, role in enumerate(roles):
            values = [results[pair][role][avg][rank][top] for rank in ranks]
            ax.bar(x + (i - (len(roles) - 1) / 2) * width, np.nan_to_num(values), width, label=role)
        ax.set_xticks(x, ranks)
        ax.set_ylim(0, 1)
        ax.set_title(pair)
        ax.set_ylabel(f"{avg} {top}")
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    if pairs:
        axes[0].legend(fontsize="small")
    return fig


def write_results(
    results: Mapping[str, Any],
    meta: Mapping[str, Any],
    out_dir: str | Path,
    per_class: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write results.json (results + ``"meta"``), results.md, accuracy.png and per_class_accuracy.csv.

    ``meta``: checkpoint, dataset, split and the counts (``RetrievalResults.counts``).
    Returns the written paths by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body = {key: value for key, value in results.items() if key != "meta"}
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "plot": out / "accuracy.png",
    }
    document = _json_safe({"meta": dict(meta), **body})
    paths["json"].write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    title = ", ".join(f"{k}: {meta[k]}" for k in ("checkpoint", "dataset", "split") if k in meta)
    if meta.get("empty_roles"):
        empty = meta["empty_roles"].items()
        title += "\n\nNo rows, left out: " + ", ".join(f"{role} (splits {splits})" for role, splits in empty)
    paths["markdown"].write_text(f"# Retrieval accuracy\n\n{title}\n\n" + results_markdown(body))
    accuracy_figure(body).savefig(paths["plot"], dpi=100)
    if per_class is not None:
        paths["per_class"] = out / "per_class_accuracy.csv"
        per_class.to_csv(paths["per_class"], index=False, float_format="%.6g")
    return paths
