"""DNA representations on real BOLD barcodes: k-mer baselines vs our DNA tower, one table.

``make bench-real`` or ``python bench/real_barcodes.py [--threads 2] [--out PATH] [key=value ...]``
(overrides apply to configs/bench/real_barcodes.yaml). Data: ../shared/data/dna/bold_insecta_4k.tsv,
protocol of ../shared/data/README.md (``clibd.eval.dna_benchmark.unseen_species_split``): one seeded unseen
species per multi-species genus; seen species' rows halved into keys and queries; unseen rows
query the seen keys. Every row of the table is measured in this run:

- k-mer count-vector cosine 1-NN, k = 4, 6, 8 (the README's reference);
- the DNA tower untrained (random init);
- MLM-pretrained (``clibd pretrain-dna``) on all the file's barcodes: unsupervised, it sees
  the query and unseen barcodes but no label;
- trained contrastively with taxonomy text (``clibd.train.loop.train``, DNA + text towers) on the
  seen species' *key* rows only: never a query row or an unseen species;
- MLM-pretrained, then contrastive.

Columns: macro top-1 of seen-species queries at species, of unseen-species queries at genus and
family (DNA->DNA against the keys), and DNA->text: each query against the distinct taxonomy
strings of the seen keys, species for seen queries and genus for unseen ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

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
from clibd.train.pretrain_dna import pretrain_dna  # noqa: E402
from clibd.taxonomy import taxonomy_text  # noqa: E402
from clibd.train.loop import train  # noqa: E402

TSV = SHARED_DATA / "dna" / "bold_insecta_4k.tsv"
CONFIG = REPO / "configs" / "bench" / "real_barcodes.yaml"
KMER_KS = (4, 6, 8)
GOAL_ROW, GOAL_METRIC = "k-mer 1-NN k=8", "unseen_genus"


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
        rows.append(Row(f"k-mer 1-NN k={k}", **scores, text_species=None, text_genus=None, seconds=time.perf_counter() - start))
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


def run_benchmark(
    tsv: Path, work: Path, overrides: Sequence[str] = (), seed: int = 0, log=print
) -> tuple[list[Row], dict]:
    """Every row of the table, measured now; plus the protocol's counts."""
    base = [f"data.cache_dir={work / 'cache'}", *overrides]
    cfg = load_config(CONFIG, [f"data.root={tsv}", *base])
    table, skips = read_specimens(cfg.data, require_image=False)
    table = table.reset_index(drop=True)
    split = Split(table, unseen_species_split(table, seed).to_numpy())
    counts = {role: int((split.roles == role).sum()) for role in (ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN)}
    info = {"records": len(table), "skipped": skips.skipped, **counts}
    info["unseen_species"] = int(split.rows(ROLE_UNSEEN)["species"].nunique())
    log(f"protocol: {info}")

    rows = kmer_rows(split)
    torch.manual_seed(cfg.train.seed)
    rows.append(tower_row("DNA tower untrained", DnaTower(cfg.model.dna), split, 0.0))
    log(f"{rows[-1]}")

    # Unsupervised: every barcode of the file (queries and unseen species included), no labels.
    start = time.perf_counter()
    mlm_dir = work / "dna_mlm"
    summary = pretrain_dna(load_config(CONFIG, [f"data.root={tsv}", f"pretrain.out_dir={mlm_dir}", *base]))
    info["mlm"] = {"steps": summary["steps"], "final_loss": summary["history"][-1]["loss"], "dedup": summary["dedup"]}
    mlm_cfg = dataclasses.replace(cfg.model.dna, pretrained=str(mlm_dir))
    rows.append(tower_row("MLM-pretrained (all file barcodes, no labels)", DnaTower(mlm_cfg), split, time.perf_counter() - start))
    log(f"{rows[-1]}")

    # Supervised by taxonomy text: the seen species' key rows only.
    keys_tsv = _write_tabular(split.rows(ROLE_KEY), cfg, work / "seen_keys.tsv", split="train")
    for method, extra in (
        ("contrastive DNA+text (seen keys)", []),
        ("MLM then contrastive DNA+text", [f"model.dna.pretrained={mlm_dir}"]),
    ):
        start = time.perf_counter()
        run_dir = work / method.split()[0].lower()
        train_cfg = load_config(CONFIG, [f"data.root={keys_tsv}", f"out_dir={run_dir}", *base, *extra])
        result = train(train_cfg, run_dir)
        info[method] = {"steps": result.steps, "final_loss": result.losses[-1][1] if result.losses else None}
        model = CLIBDModel.from_pretrained(result.model_dir)
        rows.append(clibd_row(method, model, train_cfg, split, time.perf_counter() - start))
        log(f"{rows[-1]}")
    return rows, info


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_table(rows: list[Row]) -> None:
    header = ("method", "seen species", "unseen genus", "unseen family", "DNA->text species", "DNA->text genus", "seconds")
    body = [
        (r.method, _fmt(r.seen_species), _fmt(r.unseen_genus), _fmt(r.unseen_family), _fmt(r.text_species), _fmt(r.text_genus), f"{r.seconds:.0f}")
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    for line in (header, tuple("-" * w for w in widths), *body):
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the budget: 2 cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the unseen-species choice and the key/query halves")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "real_barcodes.json")
    parser.add_argument("overrides", nargs="*", help="overrides of configs/bench/real_barcodes.yaml")
    args = parser.parse_args(argv)
    if not TSV.is_file():
        print(f"real-barcode benchmark: {TSV} is absent (the shared test data); nothing to measure", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    with TemporaryDirectory() as work:
        rows, info = run_benchmark(TSV, Path(work), args.overrides, args.seed)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    print()
    print_table(rows)
    goal = next(r for r in rows if r.method == GOAL_ROW)
    towers = [r for r in rows if not r.method.startswith("k-mer")]
    best = max(towers, key=lambda r: r.unseen_genus)
    gap = best.unseen_genus - goal.unseen_genus
    verdict = "beats" if gap > 0 else "falls short of"
    print(
        f"\nbest tower row on unseen genus: {best.method} {best.unseen_genus:.3f}, {verdict} the k=8 k-mer "
        f"baseline {goal.unseen_genus:.3f} by {abs(gap):.3f}"
    )
    print(f"total {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU, torch threads {args.threads}")
    report = {
        "data": str(TSV.relative_to(SHARED_DATA.parent)),
        "protocol": info,
        "overrides": args.overrides,
        "rows": [dataclasses.asdict(r) for r in rows],
        "goal": {"baseline": GOAL_ROW, "metric": GOAL_METRIC, "best_tower": best.method, "gap": gap},
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "threads": args.threads,
        "notes": [
            "MLM pretraining is unsupervised and sees every barcode of the file (queries and unseen species included).",
            "Contrastive training sees only the seen species' key rows.",
            "DNA->text: species top-1 of seen queries, genus top-1 of unseen queries, against the seen keys' taxonomy strings.",
        ],
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
