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

As the published evaluation (``make_prediction`` in ``bioscanclip/util/util.py``, lines 521-553:
FAISS ``IndexFlatIP`` on L2-normalised keys and queries), the nearest keys are taken in the order
FAISS's flat index gives them, ties included (:func:`faiss_tie_order`). ``unlabelled="class"``
scores a missing label as the class ``not_classified``, as the published code does
(``eval.unlabelled``; docs/fidelity.md); ``"drop"`` leaves such queries out at that rank.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clibd.config import HARMONIC_MEAN, MEAN_TOP1, QUERY_ROLES, RETRIEVAL_ROLES, Unlabelled
from clibd.eval.metrics import harmonic_mean, per_class_accuracy, topk_accuracy
from clibd.index.faiss_index import ReferenceIndex
from clibd.taxonomy import EVAL_RANKS

# (embeddings [n, d], labels DataFrame with one column per rank, names or <NA>)
Labelled = tuple[np.ndarray, pd.DataFrame]


class RetrievalResults(NamedTuple):
    results: dict  # the schema above
    per_class: pd.DataFrame  # pair, role, rank, class, n_queries, top1, top3, ...
    counts: dict  # {"queries": {role: {modality: n}}, "keys": {modality: n}}, for the meta entry


# The published code's name for a missing rank (scripts/data_processing/generate_hdf5_file_5m.py, lines
# 48-51, writes it into the labels its evaluation reads): a class like any other there.
UNLABELLED_CLASS = "not_classified"


def scored_labels(frame: pd.DataFrame, ranks: Sequence[str], unlabelled: Unlabelled = "drop") -> pd.DataFrame:
    """``frame`` with its missing labels as ``eval.unlabelled`` scores them: ``<NA>`` (``drop``) or the
    class ``not_classified`` (``class``)."""
    if unlabelled == "drop":
        return frame
    if unlabelled != "class":
        raise ValueError(f"unlabelled must be 'drop' or 'class', got {unlabelled!r}")
    return frame.assign(**{rank: frame[rank].astype("string").fillna(UNLABELLED_CLASS) for rank in ranks})


def label_vocabulary(
    frames: Sequence[pd.DataFrame], ranks: Sequence[str], unlabelled: Unlabelled = "drop"
) -> dict[str, list[str]]:
    """The sorted distinct names of each rank over ``frames``: code ``i`` of a rank is name ``i``."""
    frames = [scored_labels(frame, ranks, unlabelled) for frame in frames]
    return {rank: sorted(pd.concat([frame[rank] for frame in frames]).dropna().astype(str).unique()) for rank in ranks}


def code_labels(
    frames: Sequence[pd.DataFrame], ranks: Sequence[str], vocabulary: Mapping[str, list[str]] | None = None
) -> tuple[list[np.ndarray], dict[str, list[str]]]:
    """Integer codes ``[n, R]`` per frame (``-1`` unknown) in one shared ``vocabulary`` (default: the
    frames' own, :func:`label_vocabulary`), and that vocabulary."""
    vocabulary = dict(vocabulary) if vocabulary is not None else label_vocabulary(frames, ranks)
    codes = []
    for frame in frames:
        columns = [pd.Categorical(frame[rank].astype("string"), categories=vocabulary[rank]).codes for rank in ranks]
        codes.append(np.stack(columns, axis=1).astype(np.int64) if columns else np.empty((len(frame), 0), np.int64))
    return codes, vocabulary


def _check(name: str, item: Labelled, ranks: Sequence[str]) -> None:
    emb, labels = item
    if np.ndim(emb) != 2 or len(emb) != len(labels):
        raise ValueError(f"{name}: embeddings {np.shape(emb)} do not match {len(labels)} label rows")
    missing = [r for r in ranks if r not in labels.columns]
    if missing:
        raise ValueError(f"{name}: labels lack rank columns {missing}")


class _Coded(NamedTuple):
    """One query or key set: its embeddings and its label codes ``[n, R]`` (shared names)."""

    emb: np.ndarray
    codes: np.ndarray


def evaluate_retrieval(
    queries: Mapping[str, Mapping[str, Labelled]],
    keys: Mapping[str, Labelled],
    ks: Sequence[int] = (1, 3, 5),
    ranks: Sequence[str] = EVAL_RANKS,
    index_kind: str = "flat",
    device: str = "auto",
    pairs: Sequence[tuple[str, str]] | None = None,
    vocabulary: Mapping[str, list[str]] | None = None,
    unlabelled: Unlabelled = "drop",
) -> RetrievalResults:
    """Score every query modality of every role (``"seen"``, ``"unseen"``) against every key modality.

    ``queries[role][modality] = (embeddings, labels)``; ``keys[modality] = (embeddings, labels)``
    holding seen and unseen keys together. Query and key embeddings of a pair must share a dim.
    ``pairs``: the (query, key) modality pairs to score, in the order the results list them
    (``clibd.eval.fused``); None = every query modality against every key modality, query-major
    (image->image, image->dna, ...), as the paper's table reads. ``vocabulary``: the label names
    per rank (``RetrievalEvaluator`` holds its run's, made with the same ``unlabelled``); None = those
    of these labels. ``unlabelled``: ``drop`` | ``class`` (:func:`scored_labels`).
    """
    unknown_roles = sorted(set(queries) - set(QUERY_ROLES))
    if unknown_roles:
        raise ValueError(f"query roles must be among {QUERY_ROLES}, got {unknown_roles}")
    for role, by_modality in queries.items():
        for modality, item in by_modality.items():
            _check(f"{role} {modality} queries", item, ranks)
    for modality, item in keys.items():
        _check(f"{modality} keys", item, ranks)

    # Labels coded by name across every query and key set, so a class means the same name everywhere.
    sets = [("keys", modality, item) for modality, item in keys.items()]
    sets += [(role, modality, item) for role, by_modality in queries.items() for modality, item in by_modality.items()]
    frames = [scored_labels(labels, ranks, unlabelled) for _, _, (_, labels) in sets]
    codes, names = code_labels(frames, ranks, vocabulary)
    coded: dict[str, dict[str, _Coded]] = {}
    for (role, modality, (emb, _)), set_codes in zip(sets, codes):
        coded.setdefault(role, {})[modality] = _Coded(emb, set_codes)
    key_sets = coded.pop("keys", {})
    if pairs is None:
        query_modalities = dict.fromkeys(m for by_modality in queries.values() for m in by_modality)
        pairs = [(q, k) for q in query_modalities for k in keys]

    indexes: dict[str, ReferenceIndex] = {}  # one per key modality, built on first use
    results: dict[str, dict] = {}
    per_class = []
    for query_modality, key_modality in pairs:
        by_role = {role: of_role[query_modality] for role, of_role in coded.items() if query_modality in of_role}
        if not by_role:
            continue
        if key_modality not in indexes:
            indexes[key_modality] = _key_index(key_sets[key_modality].emb, index_kind, device)
        pair = f"{query_modality}->{key_modality}"
        results[pair], table = _score_pair(
            pair, by_role, key_sets[key_modality].codes, indexes[key_modality], ks, ranks, names
        )
        per_class.append(table)
    counts = {
        "queries": {role: {m: len(item[0]) for m, item in by_mod.items()} for role, by_mod in queries.items()},
        "keys": {m: len(item[0]) for m, item in keys.items()},
    }
    return RetrievalResults(results, _per_class_table(per_class), counts)


def _key_index(emb: np.ndarray, kind: str, device: str) -> ReferenceIndex:
    index = ReferenceIndex(np.shape(emb)[1], kind=kind, device=device)
    index.add(emb, ids=np.arange(len(emb)).astype(str))
    return index


def _score_pair(
    pair: str,
    queries_by_role: Mapping[str, _Coded],
    key_codes: np.ndarray,
    index: ReferenceIndex,
    ks: Sequence[int],
    ranks: Sequence[str],
    names: dict[str, list[str]],
) -> tuple[dict, pd.DataFrame]:
    """One query->key pair: top-k accuracy of each query role (and their harmonic mean), and the
    per-class table. The labels of the ``max(ks)`` nearest keys of each query are scored; a
    missing neighbour (approximate search, position -1) counts as an unknown label."""
    by_role: dict[str, dict] = {}
    tables = []
    for role, query in queries_by_role.items():
        if np.shape(query.emb)[1] != index.dim:
            raise ValueError(f"{pair}: {role} queries are {np.shape(query.emb)[1]}-d, keys {index.dim}-d")
        positions = faiss_tie_order(*index.search(query.emb, max(ks)))
        neighbour_codes = np.where(positions[..., None] >= 0, key_codes[positions], -1)
        by_role[role] = topk_accuracy(query.codes, neighbour_codes, ks, ranks)
        table = per_class_accuracy(query.codes, neighbour_codes, ks, ranks, names).drop(columns="code")
        tables.append(table.assign(pair=pair, role=role))
    if all(role in by_role for role in QUERY_ROLES):
        by_role[HARMONIC_MEAN] = _harmonic(by_role["seen"], by_role["unseen"])
    return by_role, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def faiss_tie_order(scores: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``positions`` (as ``ReferenceIndex.search`` sorts them: similarity descending, ties earlier key
    first) in the order of FAISS's flat index itself: among keys of exactly equal similarity the
    later-added comes first (its heap pops them so). Its set of k is the same, so for a flat index this
    is the order the published ``make_prediction`` took its neighbours in; it decides top-1 and top-3
    where keys of different classes tie (identical embeddings, e.g. text of taxa cut to one string)."""
    order = np.lexsort((-positions, -scores), axis=1)
    return np.take_along_axis(positions, order, 1)


def _per_class_table(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The pairs' per-class rows in one table, ``pair`` and ``role`` first."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    return table[["pair", "role", *[c for c in table.columns if c not in ("pair", "role")]]]


def _harmonic(seen: dict, unseen: dict) -> dict:
    return {
        avg: {
            rank: {top: harmonic_mean(seen[avg][rank][top], unseen[avg][rank][top]) for top in seen[avg][rank]}
            for rank in seen[avg]
        }
        for avg in seen
    }


def flat_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """``{"dna->dna/macro/species/top1/harmonic_mean": x, ...}`` (NaN values and "meta" left out),
    plus ``mean_top1``: the mean of every micro and macro top-1 over every pair, query role and
    rank, the published system's "best mean validation top-1" (docs/fidelity.md)."""
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
    top1 = [value for key, value in flat.items() if key.endswith(tuple(f"/top1/{role}" for role in QUERY_ROLES))]
    return {**flat, MEAN_TOP1: sum(top1) / len(top1) if top1 else math.nan}


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
            cells = [_cell(results, pair, role, avg, rank, top) for rank in ranks for role in RETRIEVAL_ROLES]
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
        roles = [r for r in RETRIEVAL_ROLES if r in results[pair]]
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
