"""DNA representations on real BOLD barcodes: k-mer baselines vs our DNA tower, one table.

``make bench-real`` or ``python bench/real_barcodes.py [--data FILE.tsv] [--threads 2] [--out PATH]
[--curve PNG] [--barcodebert] [key=value ...]`` (overrides apply to configs/bench/real_barcodes.yaml). Data: any TSV
with a ``nucleotides`` column and ``*_name`` rank columns (a BOLD export); by default
../shared/data/dna/bold_insecta_4k.tsv. Protocol of ../shared/data/README.md
(``clibd.eval.dna_benchmark.unseen_species_split``): one seeded unseen species per multi-species
genus; seen species' rows halved into keys and queries; unseen rows query the seen keys.
Every row of the table is measured in this run:

- k-mer count-vector cosine 1-NN, k = 4, 6, 8 (the README's reference), and 8-mer counts
  weighted by tf-idf (idf of the seen keys), which the recipe's table compresses;
- the bench config's BarcodeBERT-style DNA tower (non-overlapping 6-mers, 2 layers) untrained;
- with ``--barcodebert`` (about 17 CPU-minutes more), that tower MLM-pretrained (``clibd
  pretrain-dna``) on all the file's barcodes (unsupervised: it sees the query and unseen
  barcodes but no label); trained contrastively with taxonomy text (``clibd.train.loop.train``,
  DNA + text towers) on the seen species' *key* rows only (never a query row or an unseen
  species); MLM-pretrained, then contrastive; and MLM on the seen keys' barcodes only, then
  contrastive;
- the DNA recipe (configs/bench/dna_recipe.yaml layered over the bench config: a bag of
  overlapping 8-mers whose table is fitted without labels, ``pretrain.objective: kmer_spectral``,
  then trained contrastively on the seen keys), with the table fitted on every barcode of the
  file, and strictly on the seen keys' barcodes only (never a query or an unseen barcode).

``--curve PNG`` also trains the strict recipe at 1/4, 1/2, 2 and 4 times its epochs (the 1x point is the
table's row) and plots each column against compute, k-mer rows as horizontal lines.

Columns: macro top-1 of seen-species queries at species, of unseen-species queries at genus and
family (DNA->DNA against the keys), and DNA->text: each query against the distinct taxonomy
strings of the seen keys, species for seen queries and genus for unseen ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bench.common import REPO, SHARED_DATA  # noqa: E402
from clibd.config import Config, load_config  # noqa: E402
from clibd.data.sources import read_specimens  # noqa: E402
from clibd.eval.dna_benchmark import (  # noqa: E402
    ROLE_KEY,
    ROLE_SEEN,
    ROLE_UNSEEN,
    embed_batches,
    kmer_count_vectors,
    nn_macro_top1,
    unseen_species_split,
)
from clibd.models.clibd_model import CLIBDModel  # noqa: E402
from clibd.models.dna import DnaTower  # noqa: E402
from clibd.taxonomy import taxonomy_text  # noqa: E402
from clibd.train.loop import train  # noqa: E402
from clibd.train.pretrain_dna import pretrain_dna  # noqa: E402
from clibd.train.pretrain_dna.spectral import idf_weights  # noqa: E402

TSV = SHARED_DATA / "dna" / "bold_insecta_4k.tsv"
CONFIG = REPO / "configs" / "bench" / "real_barcodes.yaml"
RECIPE = REPO / "configs" / "bench" / "dna_recipe.yaml"
CURVE = REPO / "bench" / "real_barcodes_curve.png"
KMER_KS = (4, 6, 8)
GOAL_ROW = "k-mer 1-NN k=8"
RECIPE_UNTRAINED = "recipe: k-mer table fitted on the seen keys (no labels)"
RECIPE_ROW = "recipe: k-mer table (seen keys), then contrastive"
RECIPE_ALL_UNTRAINED = "recipe: k-mer table fitted on all file barcodes (no labels)"
RECIPE_ALL_ROW = "recipe: k-mer table (all barcodes), then contrastive"
TFIDF_ROW = "k-mer 1-NN k=8, tf-idf (idf of the seen keys)"
COLUMNS = {"seen_species": "seen species", "unseen_genus": "unseen genus", "unseen_family": "unseen family"}
# The floor for a learned row ("k-mer-6 level"), beside the goal of beating k-mer-8 on every column.
FLOOR = {"seen_species": 0.97, "unseen_genus": 0.70}
CURVE_FACTORS = (0.25, 0.5, 1, 2, 4)


@dataclasses.dataclass
class Row:
    method: str
    seen_species: float
    unseen_genus: float
    unseen_family: float
    text_species: Optional[float]  # DNA->text; None for rows without a text tower
    text_genus: Optional[float]
    seconds: float  # training + embedding + search for this row


@dataclasses.dataclass
class Split:
    table: pd.DataFrame
    roles: np.ndarray

    def rows(self, role: str) -> pd.DataFrame:
        return self.table[self.roles == role]


def _dna_scores(split: Split, emb: np.ndarray) -> dict[str, float]:
    key, seen, unseen = (split.roles == r for r in (ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN))
    t = split.table
    out = nn_macro_top1(emb[seen], emb[key], t[seen], t[key], ["species"])
    out |= nn_macro_top1(emb[unseen], emb[key], t[unseen], t[key], ["genus", "family"])
    return {"seen_species": out["species"], "unseen_genus": out["genus"], "unseen_family": out["family"]}


def kmer_rows(split: Split) -> list[Row]:
    rows = []
    for k in KMER_KS:
        start = time.perf_counter()
        scores = _dna_scores(split, kmer_count_vectors(split.table["dna_barcode"].tolist(), k))
        rows.append(
            Row(f"k-mer 1-NN k={k}", **scores, text_species=None, text_genus=None, seconds=time.perf_counter() - start)
        )
    # What the recipe's table compresses: 8-mer counts with rare k-mers weighted up, idf from the seen keys.
    start = time.perf_counter()
    counts = kmer_count_vectors(split.table["dna_barcode"].tolist(), 8)
    weighted = counts @ sp.diags(idf_weights(counts[split.roles == ROLE_KEY]))
    scores = _dna_scores(split, weighted)
    rows.append(Row(TFIDF_ROW, **scores, text_species=None, text_genus=None, seconds=time.perf_counter() - start))
    return rows


def tower_row(method: str, tower: DnaTower, split: Split, seconds: float) -> Row:
    start = time.perf_counter()
    tower.eval()
    ids, mask = tower.tokenizer(split.table["dna_barcode"].tolist())
    scores = _dna_scores(split, embed_batches(tower, ids, mask))
    return Row(method, **scores, text_species=None, text_genus=None, seconds=seconds + time.perf_counter() - start)


def clibd_row(method: str, model: CLIBDModel, cfg: Config, split: Split, seconds: float) -> Row:
    """DNA->DNA with ``encode_dna``; DNA->text against the seen keys' distinct taxonomy strings."""
    start = time.perf_counter()
    model.eval()
    ids, mask = model.dna_tokenizer(split.table["dna_barcode"].tolist())
    emb = embed_batches(model.encode_dna, ids, mask)
    scores = _dna_scores(split, emb)
    keys = split.rows(ROLE_KEY)
    text_cfg = cfg.model.text
    strings = taxonomy_text(keys, text_cfg.template, text_cfg.missing_word)
    first = ~strings.duplicated()
    text_taxa, strings = keys[first.to_numpy()], strings[first].tolist()
    encoded = model.text_tokenizer(strings, padding="longest", return_tensors="np")
    text_emb = embed_batches(model.encode_text, encoded["input_ids"], encoded["attention_mask"])
    seen, unseen = split.roles == ROLE_SEEN, split.roles == ROLE_UNSEEN
    t = split.table
    species = nn_macro_top1(emb[seen], text_emb, t[seen], text_taxa, ["species"])["species"]
    genus = nn_macro_top1(emb[unseen], text_emb, t[unseen], text_taxa, ["genus"])["genus"]
    return Row(method, **scores, text_species=species, text_genus=genus, seconds=seconds + time.perf_counter() - start)


def _write_tabular(rows: pd.DataFrame, cfg: Config, path: Path, split: Optional[str]) -> Path:
    """Rows back in the source file's column names (the config's mapping), optionally with a split."""
    out = rows.rename(columns={ours: theirs for ours, theirs in cfg.data.columns.items()})
    if split is not None:
        out = out.assign(split=split)
    out.to_csv(path, sep="\t", index=False)
    return path


def recipe_overrides(path: Path = RECIPE) -> list[str]:
    """The recipe file as ``key.sub=value`` overrides (it only lists what differs from the bench config)."""

    def flatten(node: dict, prefix: str) -> list[str]:
        out = []
        for key, value in node.items():
            out += flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}={value}"]
        return out

    return flatten(OmegaConf.to_container(OmegaConf.load(path)), "")


def _pretrain(tsv: Path, out_dir: Path, base: list[str], info: dict, name: str) -> Path:
    """Unsupervised pretraining (``pretrain.objective``) on every barcode of ``tsv`` (no labels)."""
    summary = pretrain_dna(load_config(CONFIG, [f"data.root={tsv}", f"pretrain.out_dir={out_dir}", *base]))
    history = summary.pop("history")
    info[name] = summary | ({"final_loss": history[-1]["loss"]} if history else {})
    return out_dir


def contrastive_row(method: str, split: Split, keys_tsv: Path, run_dir: Path, overrides: list[str], info: dict) -> Row:
    """Train DNA + text on the seen keys only (``clibd.train.loop.train``); score the trained model's DNA tower."""
    start = time.perf_counter()
    train_cfg = load_config(CONFIG, [f"data.root={keys_tsv}", f"out_dir={run_dir}", *overrides])
    result = train(train_cfg, run_dir)
    if result.model_dir is None:
        raise RuntimeError(f"{method}: training was interrupted after {result.steps} steps")
    info[method] = {"steps": result.steps, "final_loss": result.losses[-1][1] if result.losses else None}
    model = CLIBDModel.from_pretrained(result.model_dir)
    return clibd_row(method, model, train_cfg, split, time.perf_counter() - start)


def load_split(tsv: Path, base: list[str], seed: int) -> tuple[Config, Split, dict]:
    cfg = load_config(CONFIG, [f"data.root={tsv}", *base])
    table, skips = read_specimens(cfg.data, require_image=False)
    table = table.reset_index(drop=True)
    split = Split(table, unseen_species_split(table, seed).to_numpy())
    counts = {role: int((split.roles == role).sum()) for role in (ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN)}
    info = {"records": len(table), "skipped": skips.skipped, **counts}
    info["unseen_species"] = int(split.rows(ROLE_UNSEEN)["species"].nunique())
    return cfg, split, info


def barcodebert_rows(
    split: Split, tsv: Path, keys_tsv: Path, work: Path, base: list[str], info: dict, log
) -> list[Row]:
    """The BarcodeBERT-style tower of the bench config (non-overlapping 6-mers, 2 layers): MLM on
    every barcode of the file (no labels), contrastive on the seen keys, both, and MLM on the seen
    keys' barcodes only then contrastive. About 17 CPU-minutes on 2 cores."""
    cfg = load_config(CONFIG, [f"data.root={tsv}", *base])
    start = time.perf_counter()
    mlm_dir = _pretrain(tsv, work / "dna_mlm", base, info, "mlm")
    mlm_cfg = dataclasses.replace(cfg.model.dna, pretrained=str(mlm_dir))
    method = "MLM-pretrained (all file barcodes, no labels)"
    rows = [tower_row(method, DnaTower(mlm_cfg), split, time.perf_counter() - start)]
    log(f"{rows[-1]}")
    start = time.perf_counter()
    strict_dir = _pretrain(keys_tsv, work / "dna_mlm_keys", base, info, "mlm (seen keys only)")
    strict_mlm_s = time.perf_counter() - start
    for method, run, extra in (
        ("contrastive DNA+text (seen keys)", "contrastive", []),
        ("MLM then contrastive DNA+text", "mlm_contrastive", [f"model.dna.pretrained={mlm_dir}"]),
        ("MLM (seen keys only) then contrastive", "strict_mlm_contrastive", [f"model.dna.pretrained={strict_dir}"]),
    ):
        rows.append(contrastive_row(method, split, keys_tsv, work / run, [*base, *extra], info))
        log(f"{rows[-1]}")
    rows[-1].seconds += strict_mlm_s
    return rows


def recipe_rows(split: Split, tsv: Path, keys_tsv: Path, work: Path, base: list[str], info: dict, log) -> list[Row]:
    """The recipe: the k-mer table fitted without labels, untrained and then contrastive on the seen
    keys. The strict variant fits it on the seen keys' barcodes only, so it never sees a query or an
    unseen species at all; the other on every barcode of the file (queries and unseen species)."""
    recipe, rows = recipe_overrides(), []
    for tag, tsv_fit, untrained, trained in (
        ("all", tsv, RECIPE_ALL_UNTRAINED, RECIPE_ALL_ROW),
        ("seen_keys", keys_tsv, RECIPE_UNTRAINED, RECIPE_ROW),
    ):
        start = time.perf_counter()
        fitted = _pretrain(tsv_fit, work / f"kmer_table_{tag}", [*recipe, *base], info, f"k-mer table ({tag})")
        extra = [*recipe, *base, f"model.dna.pretrained={fitted}"]
        fit_s = time.perf_counter() - start
        rows.append(tower_row(untrained, DnaTower(load_config(CONFIG, extra).model.dna), split, fit_s))
        log(f"{rows[-1]}")
        rows.append(contrastive_row(trained, split, keys_tsv, work / f"recipe_{tag}", extra, info))
        rows[-1].seconds += fit_s
        log(f"{rows[-1]}")
    return rows


def run_benchmark(
    tsv: Path, work: Path, overrides: Sequence[str] = (), seed: int = 0, log=print, barcodebert: bool = False
) -> tuple[list[Row], dict, Split]:
    """Every row of the table, measured now; plus the protocol's counts. ``barcodebert``: also the
    BarcodeBERT-style rows (``barcodebert_rows``)."""
    work.mkdir(parents=True, exist_ok=True)
    base = [f"data.cache_dir={work / 'cache'}", *overrides]
    cfg, split, info = load_split(tsv, base, seed)
    log(f"protocol: {info}")
    rows = kmer_rows(split)
    torch.manual_seed(cfg.train.seed)
    rows.append(tower_row("DNA tower untrained", DnaTower(cfg.model.dna), split, 0.0))
    log(f"{rows[-1]}")
    # Supervised stages see the seen species' key rows only.
    keys_tsv = _write_tabular(split.rows(ROLE_KEY), cfg, work / "seen_keys.tsv", split="train")
    if barcodebert:
        rows += barcodebert_rows(split, tsv, keys_tsv, work, base, info, log)
    rows += recipe_rows(split, tsv, keys_tsv, work, base, info, log)
    return rows, info, split


def learning_curve(
    split: Split, keys_tsv: Path, work: Path, overrides: Sequence[str], at_1x: Row, log=print
) -> list[dict]:
    """The recipe at each of ``CURVE_FACTORS`` times its epochs (the 1x point is ``at_1x``)."""
    fitted = work / "kmer_table_seen_keys"  # run_benchmark's strict table: the curve varies the training only
    recipe = [*recipe_overrides(), f"data.cache_dir={work / 'cache'}", *overrides, f"model.dna.pretrained={fitted}"]
    epochs = load_config(CONFIG, recipe).train.epochs
    points = []
    for factor in CURVE_FACTORS:
        if factor == 1:
            row = at_1x
        else:
            run_epochs = max(1, round(epochs * factor))
            run = [*recipe, f"train.epochs={run_epochs}"]
            row = contrastive_row(f"recipe x{factor}", split, keys_tsv, work / f"curve_{factor}", run, {})
            log(f"{row}")
        points.append({"factor": factor, **dataclasses.asdict(row)})
    return points


def plot_curve(points: list[dict], kmer: list[Row], path: Path) -> None:
    """One panel per column: the recipe against compute, each k-mer row a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.6), sharey=True)
    factors = [p["factor"] for p in points]
    for ax, (column, title) in zip(axes, COLUMNS.items()):
        ax.plot(factors, [p[column] for p in points], "o-", color="black", label="recipe (learned DNA tower)")
        for row, style in zip(kmer, (":", "-.", "--", "-")):
            ax.axhline(getattr(row, column), linestyle=style, color="tab:red", label=row.method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(factors, [f"{f:g}x" for f in factors])
        ax.set_title(title)
        ax.set_xlabel("compute (x the recipe's epochs)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("macro top-1 (1-NN against seen keys)")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_table(rows: list[Row]) -> None:
    header = (
        "method",
        "seen species",
        "unseen genus",
        "unseen family",
        "DNA->text species",
        "DNA->text genus",
        "seconds",
    )
    body = [
        (
            r.method,
            _fmt(r.seen_species),
            _fmt(r.unseen_genus),
            _fmt(r.unseen_family),
            _fmt(r.text_species),
            _fmt(r.text_genus),
            f"{r.seconds:.0f}",
        )
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    for line in (header, tuple("-" * w for w in widths), *body):
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))


def verdict(rows: list[Row]) -> tuple[str, dict]:
    """The best learned row (highest mean of the three columns) against k-mer-8 on each column."""
    goal = next(r for r in rows if r.method == GOAL_ROW)
    learned = [r for r in rows if not r.method.startswith("k-mer")]
    best = max(learned, key=lambda r: sum(getattr(r, c) for c in COLUMNS))
    gaps = {c: getattr(best, c) - getattr(goal, c) for c in COLUMNS}
    floor_met = all(getattr(best, c) >= v for c, v in FLOOR.items())
    beats = all(g > 0 for g in gaps.values())
    parts = ", ".join(f"{COLUMNS[c]} {getattr(best, c):.3f} ({g:+.3f})" for c, g in gaps.items())
    status = "BEATS k-mer-8 on every column" if beats else "does not beat k-mer-8 on every column"
    floor = "meets" if floor_met else "misses"
    line = (
        f"verdict: best learned row '{best.method}': {parts} against {GOAL_ROW}; {status}; "
        f"{floor} the floor (seen species >= {FLOOR['seen_species']}, unseen genus >= {FLOOR['unseen_genus']})"
    )
    summary = {
        "baseline": GOAL_ROW,
        "best_learned": best.method,
        "gaps": gaps,
        "beats_all": beats,
        "floor_met": floor_met,
    }
    return line, summary


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=TSV, help="TSV with nucleotides and *_name rank columns")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the budget: 2 cores)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the unseen-species choice and the key/query halves"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "real_barcodes.json")
    parser.add_argument(
        "--curve",
        type=Path,
        default=None,
        help=f"also run the learning curve, plot it here (make bench-real: {CURVE.name})",
    )
    parser.add_argument(
        "--barcodebert",
        action="store_true",
        help="also the BarcodeBERT-style rows (MLM, contrastive; ~17 CPU-minutes more)",
    )
    parser.add_argument("overrides", nargs="*", help="overrides of configs/bench/real_barcodes.yaml")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"real-barcode benchmark: {args.data} is absent; nothing to measure", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    with TemporaryDirectory() as work:
        rows, info, split = run_benchmark(
            args.data, Path(work), args.overrides, args.seed, barcodebert=args.barcodebert
        )
        table_s, table_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        line, goal = verdict(rows)
        print()
        print_table(rows)
        print(f"\n{line}\ntable {table_s:.0f} s wall, {table_cpu_s:.0f} s CPU, torch threads {args.threads}")
        report = {
            "data": str(args.data),
            "protocol": info,
            "overrides": args.overrides,
            "recipe": recipe_overrides(),
            "rows": [dataclasses.asdict(r) for r in rows],
            "goal": goal,
            "verdict": line,
            "seconds": table_s,
            "cpu_seconds": table_cpu_s,
            "threads": args.threads,
            "load_average": list(os.getloadavg()),
            "notes": [
                "MLM pretraining is unsupervised and sees every barcode of the file (queries and unseen species "
                "included), except in the 'seen keys only' row.",
                "Contrastive training sees only the seen species' key rows; the recipe has no unsupervised stage.",
                "DNA->text: species top-1 of seen queries, genus top-1 of unseen queries, against the seen keys' "
                "taxonomy strings.",
            ],
        }
        args.out.write_text(json.dumps(report, indent=2))  # the table stands even if the curve is cut short
        print(f"wrote {args.out}")
        if args.curve is not None:
            at_1x = next(r for r in rows if r.method == RECIPE_ROW)
            report["curve"] = learning_curve(split, Path(work) / "seen_keys.tsv", Path(work), args.overrides, at_1x)
            plot_curve(report["curve"], [r for r in rows if r.method.startswith("k-mer")], args.curve)
            report["curve_seconds"] = time.perf_counter() - start - table_s
            report["curve_cpu_seconds"] = time.process_time() - cpu_start - table_cpu_s
            report["curve_load_average"] = list(os.getloadavg())
            args.out.write_text(json.dumps(report, indent=2))
            wall, cpu = report["curve_seconds"], report["curve_cpu_seconds"]
            print(f"curve {wall:.0f} s wall, {cpu:.0f} s CPU; wrote {args.curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
