"""``clibd data-summary --config CONFIG [key=value ...]``: read the configured data and describe it.

Prints rows and distinct species per split, rows per role, distinct names per rank, the
longest taxonomy text (the text tower's template and missing word) and species name, and
the bad-record report.
"""

from __future__ import annotations

import argparse

import pandas as pd

from clibd.config import Config, load_config
from clibd.data.bad_records import SkipReport
from clibd.data.roles import ROLE_NAMES, select_role
from clibd.taxonomy import ALL_RANKS, taxonomy_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run config")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=path data.bad_records=skip")


def summarise(table: pd.DataFrame, report: SkipReport, cfg: Config) -> str:
    lines = [f"{len(table)} specimens from {cfg.data.format} {cfg.data.root}", "", "per split:"]
    by_split = table.groupby("split", dropna=False).agg(rows=("processid", "size"), species=("species", "nunique"))
    lines += [f"  {str(split):<24} {row.rows:>9} rows {row.species:>7} species" for split, row in by_split.iterrows()]
    if table["split"].notna().any():
        lines += ["", "per role:"]
        lines += [f"  {role:<24} {len(select_role(table, cfg.data.splits, role)):>9} rows" for role in ROLE_NAMES]
    lines += ["", "distinct names per rank:"]
    lines += [
        f"  {rank:<24} {table[rank].nunique():>9} ({int(table[rank].notna().sum())} labelled)" for rank in ALL_RANKS
    ]
    if len(table):
        text = taxonomy_text(table, cfg.model.text.template, cfg.model.text.missing_word)
        longest = text.iloc[int(text.str.len().to_numpy().argmax())]
        lines += ["", f"longest taxonomy text ({len(longest)} characters): {longest!r}"]
        species = table["species"].dropna()
        if len(species):
            name = species.iloc[int(species.str.len().to_numpy().argmax())]
            lines.append(f"longest species name ({len(name)} characters): {name!r}")
    lines += ["", f"bad records ({cfg.data.bad_records}): {report.summary()}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from clibd.data.sources import read_specimens

    cfg = load_config(args.config, args.overrides)
    if cfg.data.demo_specimens:  # demo configs: generate the demo dataset at data.root when absent
        from clibd.data.demo import ensure_demo

        ensure_demo(cfg.data)
    table, report = read_specimens(cfg.data)
    print(summarise(table, report, cfg))
    return 0
