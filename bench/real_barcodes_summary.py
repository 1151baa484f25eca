"""The real-barcode table over seeds: each row's mean and sd, the printed table, and the verdict.

Rows of one seed share that seed's split, so two rows are compared by their per-seed
differences: a difference is *within the deviation* when its mean is no larger than the sd
(over seeds) of those differences. With one seed nothing has a deviation.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

COLUMNS = {"seen_species": "seen species", "unseen_genus": "unseen genus", "unseen_family": "unseen family"}
TEXT_COLUMNS = {"text_species": "DNA->text species", "text_genus": "DNA->text genus"}
# The bar for the learned row's seen species, beside matching alignment at unseen genus and family.
SEEN_SPECIES_BAR = 0.98


@dataclasses.dataclass
class Row:
    method: str
    seen_species: float
    unseen_genus: float
    unseen_family: float
    text_species: Optional[float]  # DNA->text; None for rows without a text tower
    text_genus: Optional[float]
    seconds: float  # training + embedding + search for this row
    query_ms: float  # the DNA->DNA search per query: keys and queries prepared and searched, / queries


@dataclasses.dataclass
class Summary:
    """One method over seeds: ``mean`` and ``sd`` (None with one seed) per score column, and ``per_seed``."""

    method: str
    mean: dict[str, Optional[float]]
    sd: dict[str, Optional[float]]
    seconds: float  # mean over seeds
    query_ms: float
    per_seed: list[Row]

    def scores(self, column: str) -> np.ndarray:
        return np.array([getattr(r, column) for r in self.per_seed], dtype=float)


def summarise(seeds: Sequence[Sequence[Row]]) -> list[Summary]:
    """Rows of every seed (same methods, same order) -> one Summary per method."""
    methods = [r.method for r in seeds[0]]
    for rows in seeds[1:]:
        if [r.method for r in rows] != methods:
            raise ValueError(f"seeds measured different rows: {[r.method for r in rows]} vs {methods}")
    out = []
    for i, method in enumerate(methods):
        runs = [rows[i] for rows in seeds]
        mean, sd = {}, {}
        for column in (*COLUMNS, *TEXT_COLUMNS):
            values = [getattr(r, column) for r in runs]
            if any(v is None for v in values):
                mean[column] = sd[column] = None
                continue
            mean[column] = float(np.mean(values))
            sd[column] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        seconds = float(np.mean([r.seconds for r in runs]))
        out.append(Summary(method, mean, sd, seconds, float(np.mean([r.query_ms for r in runs])), list(runs)))
    return out


def paired_difference(a: Summary, b: Summary, column: str) -> tuple[float, Optional[float]]:
    """Mean over seeds of ``a - b`` on ``column``, and the sd of the per-seed differences (None with one seed)."""
    diff = a.scores(column) - b.scores(column)
    return float(diff.mean()), (float(diff.std(ddof=1)) if len(diff) > 1 else None)


def _cell(mean: Optional[float], sd: Optional[float]) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f}" if sd is None else f"{mean:.3f} ± {sd:.3f}"


def table_lines(summaries: Sequence[Summary], markdown: bool = False) -> list[str]:
    header = ("method", *COLUMNS.values(), *TEXT_COLUMNS.values(), "s", "ms/query")
    body = [
        (
            s.method,
            *(_cell(s.mean[c], s.sd[c]) for c in (*COLUMNS, *TEXT_COLUMNS)),
            f"{s.seconds:.0f}",
            f"{s.query_ms:.2f}" if s.query_ms < 10 else f"{s.query_ms:.0f}",
        )
        for s in summaries
    ]
    if markdown:
        return ["| " + " | ".join(line) + " |" for line in (header, tuple("---" for _ in header), *body)]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    return [
        " | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in (header, tuple("-" * w for w in widths), *body)
    ]


def _gap(best: Summary, other: Summary, column: str) -> tuple[str, dict]:
    delta, sd = paired_difference(best, other, column)
    within = sd is not None and abs(delta) <= sd
    text = f"{COLUMNS[column]} {best.mean[column]:.3f} vs {other.mean[column]:.3f} ({delta:+.3f}"
    text += ")" if sd is None else f", sd {sd:.3f}{': within the deviation' if within else ''})"
    return text, {"difference": delta, "sd": sd, "within_deviation": within}


def verdict(summaries: Sequence[Summary], alignment: str, kmer: str, strict: str, is_baseline) -> tuple[str, dict]:
    """The best learned row (highest mean of the three columns) against ``alignment`` and ``kmer``.

    The goal (issue 23): its mean at or above the alignment row's at unseen genus and unseen
    family, and at or above SEEN_SPECIES_BAR at seen species. ``strict`` is named beside it."""
    by_name = {s.method: s for s in summaries}
    learned = [s for s in summaries if not is_baseline(s.method)]
    # Equal DNA->DNA means (a frozen DNA tower): the row that also has DNA->text, the model embed/classify use.
    best = max(learned, key=lambda s: (sum(s.mean[c] for c in COLUMNS), s.mean["text_species"] is not None))
    parts, report = [], {"best_learned": best.method, "seeds": len(best.per_seed)}
    for name in (alignment, kmer):
        texts, gaps = zip(*(_gap(best, by_name[name], c) for c in COLUMNS))
        parts.append(f"against '{name}': " + "; ".join(texts))
        report[name] = dict(zip(COLUMNS, gaps))
    align = by_name[alignment]
    met = (
        best.mean["unseen_genus"] >= align.mean["unseen_genus"]
        and best.mean["unseen_family"] >= align.mean["unseen_family"]
        and best.mean["seen_species"] >= SEEN_SPECIES_BAR
    )
    report["goal_met"] = met
    goal = "MEETS" if met else "does not meet"
    line = (
        f"verdict over {len(best.per_seed)} seed(s), means (paired sd of the difference): best learned row "
        f"'{best.method}' {'; '.join(parts)}. It {goal} the goal (>= alignment at unseen genus and family, "
        f">= {SEEN_SPECIES_BAR} seen species)."
    )
    if strict in by_name and strict != best.method:
        s = by_name[strict]
        line += f" Strict row '{strict}': " + " / ".join(_cell(s.mean[c], s.sd[c]) for c in COLUMNS) + "."
    return line, report
