"""How hard the demo's barcodes are: k-mer 1-NN on the demo beside the real BOLD file.

``python bench/demo_kmer.py [--specimens 4000] [--seed 0] [--split-seed 0] [--json PATH]``

The protocol of ``bench/real_barcodes.py`` (``clibd.eval.dna_benchmark.unseen_species_split``): one
unseen species per multi-species genus, the seen species' rows halved into keys and queries; k-mer
count-vector cosine 1-NN, macro top-1 of seen queries at species and of unseen queries at genus and
family. On the demo it runs over the species-labelled records (every split but ``pretrain``), simulated
in memory exactly as ``make demo`` writes them. The demo is meant to be about as hard as the real file:
each figure within ``TOLERANCE`` of the real file's (issue 12); the last column says whether it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from bench.real_barcodes import CONFIG, TSV, Row, Split, kmer_rows  # noqa: E402
from clibd.config import load_config  # noqa: E402
from clibd.data.demo import DEFAULT_SPECIMENS, simulate_demo  # noqa: E402
from clibd.data.sources import read_specimens  # noqa: E402
from clibd.eval.dna_benchmark import unseen_species_split  # noqa: E402

TOLERANCE = 0.05
COLUMNS = ("seen_species", "unseen_genus", "unseen_family")


def demo_table(n_specimens: int = DEFAULT_SPECIMENS, seed: int = 0) -> pd.DataFrame:
    """The demo's species-labelled records (the protocol needs genus and species)."""
    table = simulate_demo(n_specimens, seed).table
    return table[table["species"].notna()].reset_index(drop=True)


def real_table() -> pd.DataFrame:
    """The real BOLD file, read as ``bench/real_barcodes.py`` reads it."""
    table, _ = read_specimens(load_config(CONFIG, [f"data.root={TSV}"]).data, require_image=False)
    return table.reset_index(drop=True)


def kmer_figures(table: pd.DataFrame, split_seed: int = 0) -> dict[str, Row]:
    """The k-mer count 1-NN rows of ``bench/real_barcodes.py`` on ``table``, by k (its tf-idf row left out)."""
    rows = kmer_rows(Split(table, unseen_species_split(table, split_seed).to_numpy()))
    by_k = {row.method.rsplit("=", 1)[1]: row for row in rows}
    return {k: row for k, row in by_k.items() if k.isdigit()}


def compare(demo: dict[str, Row], real: dict[str, Row]) -> list[dict]:
    """One line per k and column: demo, real, difference, and whether it is within the tolerance."""
    lines = []
    for k in demo:
        for column in COLUMNS:
            ours, theirs = getattr(demo[k], column), getattr(real[k], column)
            lines.append(
                {
                    "k": int(k),
                    "column": column,
                    "demo": ours,
                    "real": theirs,
                    "difference": ours - theirs,
                    "within": abs(ours - theirs) <= TOLERANCE,
                }
            )
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specimens", type=int, default=DEFAULT_SPECIMENS, help="demo size (make demo: 4000)")
    parser.add_argument("--seed", type=int, default=0, help="demo seed (make demo: 0)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the unseen-species choice and halves")
    parser.add_argument("--json", type=Path, help="also write the lines as JSON here")
    args = parser.parse_args(argv)
    if not TSV.is_file():
        print(f"demo k-mer figures: {TSV} is absent (the shared real data); nothing to compare with", file=sys.stderr)
        return 2
    table = demo_table(args.specimens, args.seed)
    lines = compare(kmer_figures(table, args.split_seed), kmer_figures(real_table(), args.split_seed))
    print(
        f"demo: {args.specimens} specimens, seed {args.seed}: {len(table)} species-labelled records; "
        f"real: {TSV.name}; split seed {args.split_seed}"
    )
    print(f"{'k':>2} {'column':<14} {'demo':>6} {'real':>6} {'diff':>7}  within ±{TOLERANCE}")
    for line in lines:
        print(
            f"{line['k']:>2} {line['column']:<14} {line['demo']:6.3f} {line['real']:6.3f} "
            f"{line['difference']:+7.3f}  {'yes' if line['within'] else 'NO'}"
        )
    if args.json:
        args.json.write_text(json.dumps(lines, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
