"""The run report of ``clibd serve --run DIR``: what ``python train.py`` and ``python eval.py``
left in a run folder, as one page. The results table (``eval-*/results.md``), ``accuracy.png``,
the UMAP map of the test embeddings (``embeddings_map.csv``, hover a point for the specimen,
click it for its photo) and the training curves (``train_log.jsonl``).

Only files of the run folder are read, by fixed names; a specimen photo is served by its row
in the map (the ``image_ref`` that ``eval.py`` wrote), never by a path from the request.
"""

from __future__ import annotations

import io
import json
from html import escape
from pathlib import Path
from typing import Optional

import pandas as pd

from clibd.data.images import ImageReadError, read_image_bytes
from clibd.data.transforms import ImageDecodeError, decode_image
from clibd.eval.run_files import MAP_FILE, PICTURE_FILE
from clibd.serve.svg import line_chart, scatter

PICTURES = ("accuracy.png", PICTURE_FILE)
PHOTO_SIDE = 256
CURVES = {"loss": "loss", "lr": "learning rate", "logit_scale": "logit scale", "samples_per_s": "samples / s"}


class RunReport:
    """``RunReport("runs/demo")``; the evaluation folder is ``eval-test`` (else the first ``eval-*``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"run folder not found: {self.run_dir}")
        found = sorted(self.run_dir.glob("eval-*"), key=lambda p: (p.name != "eval-test", p.name))
        self.eval_dir: Optional[Path] = found[0] if found else None
        self._points = self._read_points()

    def _read_points(self) -> Optional[pd.DataFrame]:
        path = self.eval_dir / MAP_FILE if self.eval_dir else None
        return pd.read_csv(path, dtype={"id": "string", "image_ref": "string"}) if path and path.is_file() else None

    def picture(self, name: str) -> Optional[Path]:
        path = self.eval_dir / name if self.eval_dir and name in PICTURES else None
        return path if path is not None and path.is_file() else None

    def specimen_photo(self, row: int) -> Optional[bytes]:
        if self._points is None or not 0 <= row < len(self._points):
            return None
        ref = self._points["image_ref"].iat[row]
        try:
            image = decode_image(read_image_bytes(str(ref)), str(ref), PHOTO_SIDE) if pd.notna(ref) else None
        except (ImageReadError, ImageDecodeError, OSError):
            return None
        if image is None:
            return None
        image.thumbnail((PHOTO_SIDE, PHOTO_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=88)
        return buffer.getvalue()

    def html(self) -> str:
        sections = [self._results(), self._map(), self._curves()]
        return _PAGE.format(run=escape(str(self.run_dir)), body="\n".join(sections))

    def _results(self) -> str:
        results = self.eval_dir / "results.md" if self.eval_dir else None
        if results is None or not results.is_file():
            return (
                f"<section><h2>Results</h2><p class='note'>no eval-*/results.md in {escape(str(self.run_dir))}: "
                "run <code>python eval.py --checkpoint RUN/model</code></p></section>"
            )
        accuracy = '<img src="/run/picture/accuracy.png" alt="accuracy per rank">'
        accuracy = accuracy if self.picture("accuracy.png") else ""
        return (
            f"<section><h2>Results ({escape(self.eval_dir.name)})</h2>{markdown_tables(results.read_text())}"
            f"{accuracy}</section>"
        )

    def _map(self) -> str:
        if self._points is None or not len(self._points):
            return (
                f"<section><h2>Embedding map</h2><p class='note'>no {MAP_FILE} in the evaluation folder: "
                "run <code>python eval.py --checkpoint RUN/model</code> to write it</p></section>"
            )
        maps = []
        for modality, points in self._points.groupby("modality", sort=False):
            labels = [
                (row, f"{p.id} | {p.order} > {p.family} > {p.genus} > {p.species} ({p.role})")
                for row, p in zip(points.index, points.itertuples())
            ]
            groups = points["order"].astype("string").fillna("unknown").tolist()
            maps.append(
                scatter(
                    points["x"].to_numpy(),
                    points["y"].to_numpy(),
                    groups,
                    labels,
                    f"{modality} embeddings of the test queries, by order",
                )
            )
        return (
            "<section><h2>Embedding map (UMAP)</h2><p class='note'>hover a point for the specimen; click it "
            "for its photo</p><div class='maps'>"
            + "".join(maps)
            + "</div><div id='specimen' class='specimen'></div></section>"
        )

    def _curves(self) -> str:
        log = self.run_dir / "train_log.jsonl"
        if not log.is_file():
            return "<section><h2>Training curves</h2><p class='note'>no train_log.jsonl in the run folder</p></section>"
        steps = pd.DataFrame([json.loads(line) for line in log.read_text().splitlines() if line.strip()])
        charts = []
        for column, title in CURVES.items():
            if column == "loss":
                series = {c: steps[c] for c in steps.columns if c == "loss" or c.startswith("loss/")}
            else:
                series = {column: steps[column]} if column in steps else {}
            if series and "step" in steps:
                charts.append(line_chart(steps["step"].tolist(), series, title))
        return "<section><h2>Training curves</h2><div class='charts'>" + "".join(charts) + "</div></section>"


def markdown_tables(text: str) -> str:
    """``## headings`` and ``| pipe | tables |`` (what ``results.md`` holds) -> HTML, every cell escaped."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            head, *body = rows
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{escape(c)}</th>" for c in head)
                + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in body)
                + "</tbody></table>"
            )
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                rows.append(cells)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h3>{escape(line[3:])}</h3>")
    flush()
    return "".join(out)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clibd run report: {run}</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><header><h1>clibd run report</h1><span class="run">{run}</span></header>
<main>{body}</main>
<script src="/static/report.js"></script></body></html>
"""
