"""Small inline SVG charts for the run report (no JavaScript library, nothing fetched): a
line chart of training curves and a scatter plot of the embedding map. Every text that goes
into the markup is escaped."""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Sequence

import numpy as np

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
)


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    span = vmax - vmin or 1.0
    return lo + (values - vmin) / span * (hi - lo)


def line_chart(
    x: Sequence[float], series: dict[str, Sequence[float]], title: str, width: int = 420, height: int = 240
) -> str:
    """One panel: every series against ``x`` on a shared y axis, with its min / max labelled."""
    pad = 36
    xs = _scale(np.asarray(x, dtype=float), pad, width - 10)
    values = np.concatenate([np.asarray(v, dtype=float) for v in series.values()])
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
        f'<text x="{width / 2}" y="14" text-anchor="middle" class="title">{escape(title)}</text>',
        f'<text x="2" y="30" class="tick">{vmax:.3g}</text>',
        f'<text x="2" y="{height - 22}" class="tick">{vmin:.3g}</text>',
        f'<text x="{pad}" y="{height - 4}" class="tick">step {x[0]:g}</text>'
        f'<text x="{width - 10}" y="{height - 4}" text-anchor="end" class="tick">{x[-1]:g}</text>',
        f'<rect x="{pad}" y="22" width="{width - pad - 10}" height="{height - 48}" class="frame"/>',
    ]
    for i, (name, ys) in enumerate(series.items()):
        y = np.asarray(ys, dtype=float)
        py = height - 26 - (y - vmin) / ((vmax - vmin) or 1.0) * (height - 52)
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, py) if np.isfinite(b))
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{points}">'
            f"<title>{escape(name)}</title></polyline>"
        )
        parts.append(f'<text x="{pad + 6}" y="{36 + 12 * i}" class="legend" fill="{colour}">{escape(name)}</text>')
    return "".join(parts) + "</svg>"


def scatter(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    labels: Sequence[tuple[int, str]],
    title: str,
    width: int = 560,
    height: int = 460,
) -> str:
    """Points coloured by group (the most frequent groups get distinct colours, the rest grey);
    each point has a hover title and ``data-row`` (its row in the map) for the page's click."""
    names = [name for name, _ in Counter(groups).most_common()]
    colour = {name: PALETTE[i] if i < len(PALETTE) else "#bbbbbb" for i, name in enumerate(names)}
    px, py = _scale(np.asarray(x, float), 10, width - 150), _scale(-np.asarray(y, float), 24, height - 10)
    parts = [
        f'<svg class="map" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
        f'<text x="{(width - 140) / 2}" y="14" text-anchor="middle" class="title">{escape(title)}</text>',
    ]
    for a, b, group, (row, label) in zip(px, py, groups, labels):
        parts.append(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.2" fill="{colour[group]}" data-row="{row}">'
            f"<title>{escape(label)}</title></circle>"
        )
    for i, name in enumerate(names[: len(PALETTE)]):
        parts.append(
            f'<circle cx="{width - 136}" cy="{30 + 15 * i}" r="4" fill="{colour[name]}"/>'
            f'<text x="{width - 128}" y="{34 + 15 * i}" class="legend">{escape(name)}</text>'
        )
    return "".join(parts) + "</svg>"
