"""A 2-D map of the test embeddings: seeded UMAP (cosine) of the seen + unseen queries of each
query modality, coloured by order. ``write_embedding_map`` writes ``embeddings.png`` (one
panel per modality) and ``embeddings_map.csv`` (one row per point: modality, id, x, y, the
four ranks, seen/unseen and the specimen's image_ref), which ``clibd serve --run`` draws as
an interactive map."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from clibd.config import SPECIMEN_MODALITIES
from clibd.eval.clustering import reduce_umap
from clibd.eval.run_files import MAP_FILE, PICTURE_FILE
from clibd.taxonomy import EVAL_RANKS

MAX_LEGEND = 12


def embedding_map(queries: Mapping[str, Mapping[str, tuple[np.ndarray, pd.DataFrame]]], seed: int = 0) -> pd.DataFrame:
    """``queries`` ``{role: {modality: (emb, rows)}}`` (what ``RetrievalEvaluator`` embeds) -> the map's points."""
    frames = []
    for modality in SPECIMEN_MODALITIES:  # text embeddings are one per taxon, not per specimen
        parts = [(role, *by_modality[modality]) for role, by_modality in queries.items() if modality in by_modality]
        if sum(len(emb) for _, emb, _ in parts) < 4:  # UMAP's spectral start needs a few points
            continue
        emb = np.concatenate([emb for _, emb, _ in parts])
        xy = reduce_umap(emb, n_components=2, seed=seed)
        rows = pd.concat([r.assign(role=role) for role, _, r in parts], ignore_index=True)
        image_ref = rows["image_ref"] if "image_ref" in rows else pd.Series(pd.NA, index=rows.index, dtype="string")
        frames.append(
            pd.DataFrame(
                {
                    "modality": modality,
                    "id": rows["processid"],
                    "x": xy[:, 0],
                    "y": xy[:, 1],
                    **{rank: rows[rank] for rank in EVAL_RANKS},
                    "role": rows["role"],
                    "image_ref": image_ref,
                }
            )
        )
    columns = ["modality", "id", "x", "y", *EVAL_RANKS, "role", "image_ref"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def map_figure(points: pd.DataFrame) -> Figure:
    modalities = list(dict.fromkeys(points["modality"]))
    fig = Figure(figsize=(5.5 * max(1, len(modalities)), 5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(modalities))))
    orders = points["order"].astype("string").fillna("unknown")
    names = orders.value_counts().index.tolist()
    colours = {name: colormaps["tab20"](i % 20) for i, name in enumerate(names)}
    for ax, modality in zip(axes, modalities):
        mine = points["modality"] == modality
        for name in names:
            sel = mine & (orders == name)
            ax.scatter(points.loc[sel, "x"], points.loc[sel, "y"], s=6, color=colours[name], label=name)
        ax.set_title(f"{modality} embeddings of the test queries (UMAP)")
        ax.set_xticks([])
        ax.set_yticks([])
    if names:  # the most frequent orders only: a legend of hundreds helps nobody
        handles, labels = axes[0].get_legend_handles_labels()
        axes[0].legend(handles[:MAX_LEGEND], labels[:MAX_LEGEND], markerscale=2, fontsize=7, title="order")
    return fig


def write_embedding_map(
    queries: Mapping[str, Mapping[str, tuple[np.ndarray, pd.DataFrame]]], out_dir: str | Path, seed: int = 0
) -> pd.DataFrame:
    """Write ``embeddings_map.csv`` and ``embeddings.png`` into ``out_dir``; returns the points."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = embedding_map(queries, seed)
    points.to_csv(out / MAP_FILE, index=False, float_format="%.5g")
    map_figure(points).savefig(out / PICTURE_FILE, dpi=100)
    return points
