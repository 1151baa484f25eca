"""DNA representations on real BOLD barcodes: alignment and k-mer baselines vs our DNA tower, one table.

``make bench-real`` or ``python bench/real_barcodes.py [--data FILE.tsv] [--unseen-rank genus|family]
[--seeds 3] [--threads 2] [--align-sample 25] [--out PATH] [--barcodebert] [key=value ...]`` (overrides apply to
configs/bench/real_barcodes.yaml). Data: a BOLD export in either of BOLD's layouts (``BOLD_LAYOUTS``: the
public API's TSV with ``*_name`` rank columns and ``nucleotides``, or a BOLD data package with ``order`` ...
``species`` and ``nuc``); by default ../shared/data/dna/bold_insecta_4k.tsv. Rows lacking family, genus or
species are dropped and counted. Protocol of ../shared/data/README.md
(``clibd.eval.dna_benchmark.unseen_species_split``): in every genus (``--unseen-rank family``: family) with
two or more species one seeded species is unseen; seen species' rows halved into keys and queries; unseen
rows query the seen keys. Every row is measured in this run, on each of ``--seeds`` splits (seeds 0, 1,
...); the table gives each row's mean ± sd over them:

- k-mer count-vector cosine 1-NN, k = 4, 6, 8 (the README's reference), and 8-mer counts
  weighted by tf-idf (idf of the seen keys), and the recipe's tokens (spaced 8-mers tagged by codon
  phase) weighted the same way, what the recipe's table compresses;
- alignment 1-NN (``clibd.eval.alignment_search``): a k-mer-8 cosine prefilter of 50 candidates,
  then the key of highest % identity (parasail semi-global, ``clibd.data.alignment``); and, on a
  seeded sample of ``--align-sample`` seen and as many unseen queries (all keys against every
  query would take ~0.5 ms x keys x queries, about 40 minutes a seed here), every key as a
  candidate beside the 50-candidate row on the same sample;
- with ``--barcodebert`` (about 17 CPU-minutes more a seed), the bench config's BarcodeBERT-style DNA
  tower (non-overlapping 6-mers, 2 layers) untrained, MLM-pretrained (``clibd
  pretrain-dna``) on all the file's barcodes (unsupervised: it sees the query and unseen
  barcodes but no label); trained contrastively with taxonomy text (``clibd.train.loop.train``,
  DNA + text towers) on the seen species' *key* rows only (never a query row or an unseen
  species); MLM-pretrained, then contrastive; and MLM on the seen keys' barcodes only, then
  contrastive;
- the DNA recipe (configs/bench/dna_recipe.yaml layered over the bench config: a bag of
  k-mers whose table is fitted without labels, ``pretrain.objective: kmer_spectral``,
  then trained contrastively on the seen keys), with the table fitted on every barcode of the
  file (once: it depends on no split), and strictly on each split's seen keys' barcodes only
  (never a query or an unseen barcode).

Columns: macro top-1 of seen-species queries at species, of unseen-species queries at genus and
family (DNA->DNA against the keys), and DNA->text: each query against the distinct taxonomy
strings of the seen keys, species for seen queries and genus for unseen ones; the row's seconds
(training included) and its DNA->DNA search per query (keys and queries prepared and searched).
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
from typing import Callable, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bench.common import REPO, SHARED_DATA  # noqa: E402
from bench.real_barcodes_summary import Row, Summary, summarise, table_lines, verdict  # noqa: E402
from clibd.config import Config, load_config  # noqa: E402
from clibd.data.kmer_counts import token_counts  # noqa: E402
from clibd.data.sources import read_specimens  # noqa: E402
from clibd.data.sources.delimited import table_columns  # noqa: E402
from clibd.eval.alignment_search import alignment_nearest  # noqa: E402
from clibd.eval.dna_benchmark import (  # noqa: E402
    ROLE_KEY,
    ROLE_SEEN,
    ROLE_UNSEEN,
    UNSEEN_RANKS,
    embed_batches,
    hit_macro_top1,
    kmer_count_vectors,
    nn_macro_top1,
    unseen_species_split,
)
from clibd.models.clibd_model import CLIBDModel  # noqa: E402
from clibd.models.dna import DnaTower  # noqa: E402
from clibd.models.kmer_bag import make_kmer_tokenizer  # noqa: E402
from clibd.taxonomy import taxonomy_text  # noqa: E402
from clibd.train.loop import train  # noqa: E402
from clibd.train.pretrain_dna import pretrain_dna  # noqa: E402
from clibd.train.pretrain_dna.spectral import column_weights, idf_weights, pattern_blocks  # noqa: E402

TSV = SHARED_DATA / "dna" / "bold_insecta_4k.tsv"
CONFIG = REPO / "configs" / "bench" / "real_barcodes.yaml"
RECIPE = REPO / "configs" / "bench" / "dna_recipe.yaml"
# BOLD's two export layouts: our column -> theirs. The one place the bench maps a file's columns.
BOLD_LAYOUTS: dict[str, dict[str, str]] = {
    "BOLD TSV (public API, BarcodeBERT's files)": {
        "dna_barcode": "nucleotides",
        "order": "order_name",
        "family": "family_name",
        "genus": "genus_name",
        "species": "species_name",
    },
    "BOLD data package": {
        "dna_barcode": "nuc",
        "order": "order",
        "family": "family",
        "genus": "genus",
        "species": "species",
    },
}
MISSING_WORDS = ("None",)  # a data package's word for an unknown rank
PROTOCOL_RANKS = ("family", "genus", "species")  # a row lacking one of them is dropped (counted)
KMER_KS = (4, 6, 8)
GOAL_ROW = "k-mer 1-NN k=8"
TFIDF_ROW = "k-mer 1-NN k=8, tf-idf (idf of the seen keys)"
RECIPE_TOKENS_ROW = "k-mer 1-NN, the recipe's tokens, tf-idf (idf of the seen keys)"
ALIGN_CANDIDATES = 50
ALIGN_ROW = f"alignment 1-NN (% identity), top {ALIGN_CANDIDATES} of k-mer-8"
ALIGN_SAMPLE_ROW = f"alignment 1-NN, top {ALIGN_CANDIDATES}, query sample"
ALIGN_ALL_ROW = "alignment 1-NN, all keys, query sample"
ALIGN_SAMPLE = 25  # seen and as many unseen queries per seed for the all-keys row
RECIPE_UNTRAINED = "recipe: table fitted on the seen keys (no labels)"
RECIPE_ROW = "recipe: table (seen keys), then contrastive"
RECIPE_ALL_UNTRAINED = "recipe: table fitted on all file barcodes (no labels)"
RECIPE_ALL_ROW = "recipe: table (all barcodes), then contrastive"


def is_baseline(method: str) -> bool:
    return method.startswith(("k-mer", "alignment"))


@dataclasses.dataclass
class Split:
    table: pd.DataFrame
    roles: np.ndarray

    def rows(self, role: str) -> pd.DataFrame:
        return self.table[self.roles == role]

    @property
    def n_queries(self) -> int:
        return int((self.roles != ROLE_KEY).sum())


def column_overrides(tsv: Path) -> list[str]:
    """``data.columns`` overrides for the BOLD layout whose columns ``tsv`` has."""
    present = set(table_columns(tsv))
    for columns in BOLD_LAYOUTS.values():
        if set(columns.values()) <= present:
            return [f"data.columns.{ours}={theirs}" for ours, theirs in columns.items()]
    wanted = "; or ".join(f"{name}: {', '.join(cols.values())}" for name, cols in BOLD_LAYOUTS.items())
    raise ValueError(f"{tsv}: not a BOLD export: needs the columns of {wanted}")


def _dna_scores(split: Split, emb: np.ndarray | sp.spmatrix) -> dict[str, float]:
    key, seen, unseen = (split.roles == r for r in (ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN))
    t = split.table
    out = nn_macro_top1(emb[seen], emb[key], t[seen], t[key], ["species"])
    out |= nn_macro_top1(emb[unseen], emb[key], t[unseen], t[key], ["genus", "family"])
    return {"seen_species": out["species"], "unseen_genus": out["genus"], "unseen_family": out["family"]}


def _hit_scores(split: Split, queries: np.ndarray, hits: np.ndarray) -> dict[str, float]:
    """Scores of queries (table rows) whose nearest keys are the table rows ``hits``."""
    t, roles = split.table, split.roles[queries]
    seen, unseen = roles == ROLE_SEEN, roles == ROLE_UNSEEN
    out = hit_macro_top1(t.iloc[queries[seen]], t.iloc[hits[seen]], ["species"])
    out |= hit_macro_top1(t.iloc[queries[unseen]], t.iloc[hits[unseen]], ["genus", "family"])
    return {"seen_species": out["species"], "unseen_genus": out["genus"], "unseen_family": out["family"]}


def _hit_row(method: str, split: Split, queries: np.ndarray, hits: np.ndarray, seconds: float, query_ms: float) -> Row:
    """A row of queries (table rows) whose nearest keys (table rows ``hits``) were found by search, not embedding."""
    scores = _hit_scores(split, queries, hits)
    return Row(method, **scores, text_species=None, text_genus=None, seconds=seconds, query_ms=query_ms)


def _dna_row(method: str, split: Split, vectors: Callable[[], np.ndarray | sp.spmatrix], seconds: float = 0.0) -> Row:
    """A DNA->DNA row: ``vectors()`` embeds every barcode; its time and the search's, per query."""
    start = time.perf_counter()
    scores = _dna_scores(split, vectors())
    search_s = time.perf_counter() - start
    return Row(
        method,
        **scores,
        text_species=None,
        text_genus=None,
        seconds=seconds + search_s,
        query_ms=1000 * search_s / split.n_queries,
    )


def kmer_rows(split: Split) -> list[Row]:
    barcodes = split.table["dna_barcode"].tolist()
    keys = split.roles == ROLE_KEY
    rows = [_dna_row(f"k-mer 1-NN k={k}", split, lambda k=k: kmer_count_vectors(barcodes, k)) for k in KMER_KS]

    def tfidf8() -> sp.csr_matrix:  # what the previous recipe's table compressed: rare 8-mers weighted up
        counts = kmer_count_vectors(barcodes, 8)
        return counts @ sp.diags(idf_weights(counts[keys]))

    rows.append(_dna_row(TFIDF_ROW, split, tfidf8))
    return rows


def recipe_tokens_row(split: Split, base: list[str]) -> Row:
    """Counts of the recipe tokenizer's tokens, weighted as its table's fit weighs them (idf of the seen keys)."""
    dna_cfg = load_config(CONFIG, [*recipe_overrides(), *base]).model.dna
    tokenizer = make_kmer_tokenizer(dna_cfg)

    def vectors() -> sp.csr_matrix:
        counts = token_counts(split.table["dna_barcode"].tolist(), tokenizer)
        weights = column_weights(
            counts[split.roles == ROLE_KEY], pattern_blocks(tokenizer), dna_cfg.kmer_pattern_weights
        )
        return counts @ sp.diags(weights)

    return _dna_row(RECIPE_TOKENS_ROW, split, vectors)


def query_sample(split: Split, per_role: int, seed: int) -> np.ndarray:
    """Table rows of ``per_role`` seeded seen queries and as many unseen ones (all when fewer)."""
    rng = np.random.default_rng(seed)
    picks = []
    for role in (ROLE_SEEN, ROLE_UNSEEN):
        rows = np.flatnonzero(split.roles == role)
        picks.append(np.sort(rng.choice(rows, min(per_role, len(rows)), replace=False)))
    return np.concatenate(picks)


def alignment_rows(split: Split, sample_per_role: int, seed: int, threads: int, info: dict) -> list[Row]:
    """Alignment 1-NN among the top ``ALIGN_CANDIDATES`` k-mer candidates, every query; and among all keys
    on a seeded query sample, beside the top-candidates row on the same sample (its picks from the full run)."""
    barcodes = split.table["dna_barcode"].tolist()
    keys, queries = np.flatnonzero(split.roles == ROLE_KEY), np.flatnonzero(split.roles != ROLE_KEY)
    key_seqs = [barcodes[i] for i in keys]
    start = time.perf_counter()
    top = alignment_nearest([barcodes[i] for i in queries], key_seqs, ALIGN_CANDIDATES, threads)
    top_s = time.perf_counter() - start
    rows = [_hit_row(ALIGN_ROW, split, queries, keys[top.key], top_s, 1000 * top_s / len(queries))]
    sample = query_sample(split, sample_per_role, seed)
    start = time.perf_counter()
    every = alignment_nearest([barcodes[i] for i in sample], key_seqs, None, threads)
    every_s = time.perf_counter() - start
    at = np.searchsorted(queries, sample)  # the sampled queries' places in the top-50 run
    in_top = top.identity[at]
    share_s = top_s * len(sample) / len(queries)
    rows.append(_hit_row(ALIGN_SAMPLE_ROW, split, sample, keys[top.key[at]], share_s, rows[0].query_ms))
    rows.append(_hit_row(ALIGN_ALL_ROW, split, sample, keys[every.key], every_s, 1000 * every_s / len(sample)))
    same = np.isclose(in_top, every.identity) | (np.isnan(in_top) & np.isnan(every.identity))
    info["alignment"] = {
        "candidates": ALIGN_CANDIDATES,
        "unaligned_queries": top.unaligned,
        "sample_queries": len(sample),
        "sample_same_identity": int(same.sum()),
        "sample_higher_with_all_keys": int((every.identity > in_top + 1e-9).sum()),
    }
    return rows


def tower_row(method: str, tower: DnaTower, split: Split, seconds: float) -> Row:
    tower.eval()

    def vectors() -> np.ndarray:
        ids, mask = tower.tokenizer(split.table["dna_barcode"].tolist())
        return embed_batches(tower, ids, mask)

    return _dna_row(method, split, vectors, seconds)


def clibd_row(method: str, model: CLIBDModel, cfg: Config, split: Split, seconds: float) -> Row:
    """DNA->DNA with ``encode_dna``; DNA->text against the seen keys' distinct taxonomy strings."""
    model.eval()
    start = time.perf_counter()
    ids, mask = model.dna_tokenizer(split.table["dna_barcode"].tolist())
    emb = embed_batches(model.encode_dna, ids, mask)
    scores = _dna_scores(split, emb)
    search_s = time.perf_counter() - start
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
    return Row(
        method,
        **scores,
        text_species=species,
        text_genus=genus,
        seconds=seconds + time.perf_counter() - start,
        query_ms=1000 * search_s / split.n_queries,
    )


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


def load_split(tsv: Path, base: list[str], seed: int, unseen_rank: str = "genus") -> tuple[Config, Split, dict]:
    """The file's rows that have family, genus and species (the rest dropped and counted), and their roles."""
    cfg = load_config(CONFIG, [f"data.root={tsv}", *base])
    table, skips = read_specimens(cfg.data, require_image=False)
    ranks = table[list(PROTOCOL_RANKS)]
    lacking = (ranks.isna() | ranks.isin(MISSING_WORDS)).any(axis=1).to_numpy()
    table = table[~lacking].reset_index(drop=True)
    split = Split(table, unseen_species_split(table, seed, unseen_rank).to_numpy())
    counts = {role: int((split.roles == role).sum()) for role in (ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN)}
    info = {"records": len(table), "skipped": skips.skipped, "lacking_family_genus_or_species": int(lacking.sum())}
    info |= {**counts, "unseen_rank": unseen_rank, "unseen_species": int(split.rows(ROLE_UNSEEN)["species"].nunique())}
    return cfg, split, info


def barcodebert_rows(
    split: Split, tsv: Path, keys_tsv: Path, work: Path, base: list[str], info: dict, log
) -> list[Row]:
    """The BarcodeBERT-style tower of the bench config (non-overlapping 6-mers, 2 layers): untrained, MLM on
    every barcode of the file (no labels), contrastive on the seen keys, both, and MLM on the seen
    keys' barcodes only then contrastive. About 17 CPU-minutes on 2 cores."""
    cfg = load_config(CONFIG, [f"data.root={tsv}", *base])
    torch.manual_seed(cfg.train.seed)
    rows = [tower_row("DNA tower untrained", DnaTower(cfg.model.dna), split, 0.0)]
    log(f"{rows[-1]}")
    start = time.perf_counter()
    mlm_dir = _pretrain(tsv, work / "dna_mlm", base, info, "mlm")
    mlm_cfg = dataclasses.replace(cfg.model.dna, pretrained=str(mlm_dir))
    method = "MLM-pretrained (all file barcodes, no labels)"
    rows.append(tower_row(method, DnaTower(mlm_cfg), split, time.perf_counter() - start))
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


def recipe_rows(
    split: Split, tsv: Path, keys_tsv: Path, work: Path, base: list[str], info: dict, log, fitted_once: dict
) -> list[Row]:
    """The recipe: the k-mer table fitted without labels, untrained and then contrastive on the seen
    keys. The strict variant fits it on the seen keys' barcodes only, so it never sees a query or an
    unseen species at all; the other on every barcode of the file (queries and unseen species).
    That one depends on no split: it is fitted once and kept in ``fitted_once`` for the next seeds,
    each of whose rows still counts its fit's seconds."""
    recipe, rows = recipe_overrides(), []
    for tag, tsv_fit, untrained, trained in (
        ("all", tsv, RECIPE_ALL_UNTRAINED, RECIPE_ALL_ROW),
        ("seen_keys", keys_tsv, RECIPE_UNTRAINED, RECIPE_ROW),
    ):
        name = f"k-mer table ({tag})"
        if tag in fitted_once:
            fitted, fit_s, info[name] = fitted_once[tag]
        else:
            start = time.perf_counter()
            fitted = _pretrain(tsv_fit, work / f"kmer_table_{tag}", [*recipe, *base], info, name)
            fit_s = time.perf_counter() - start
            if tag == "all":
                fitted_once[tag] = (fitted, fit_s, info[name])
        extra = [*recipe, *base, f"model.dna.pretrained={fitted}"]
        rows.append(tower_row(untrained, DnaTower(load_config(CONFIG, extra).model.dna), split, fit_s))
        log(f"{rows[-1]}")
        rows.append(contrastive_row(trained, split, keys_tsv, work / f"recipe_{tag}", extra, info))
        rows[-1].seconds += fit_s
        log(f"{rows[-1]}")
    return rows


def run_benchmark(
    tsv: Path,
    work: Path,
    overrides: Sequence[str] = (),
    seed: int = 0,
    log=print,
    barcodebert: bool = False,
    unseen_rank: str = "genus",
    align_sample: int = ALIGN_SAMPLE,
    threads: int = 1,
    fitted_once: Optional[dict] = None,
) -> tuple[list[Row], dict, Split]:
    """Every row of the table on one seed's split, measured now; plus the protocol's counts.
    ``barcodebert``: also the BarcodeBERT-style rows (``barcodebert_rows``). ``fitted_once``:
    what earlier seeds fitted that no split enters (``recipe_rows``)."""
    work.mkdir(parents=True, exist_ok=True)
    base = [*column_overrides(tsv), f"data.cache_dir={work / 'cache'}", *overrides]
    cfg, split, info = load_split(tsv, base, seed, unseen_rank)
    log(f"seed {seed} protocol: {info}")
    rows = kmer_rows(split)
    rows.append(recipe_tokens_row(split, base))
    rows += alignment_rows(split, align_sample, seed, threads, info)
    for row in rows[-3:]:
        log(f"{row}")
    # Supervised stages see the seen species' key rows only.
    keys_tsv = _write_tabular(split.rows(ROLE_KEY), cfg, work / "seen_keys.tsv", split="train")
    if barcodebert:
        rows += barcodebert_rows(split, tsv, keys_tsv, work, base, info, log)
    rows += recipe_rows(split, tsv, keys_tsv, work, base, info, log, {} if fitted_once is None else fitted_once)
    return rows, info, split


def run_seeds(
    tsv: Path, work: Path, overrides: Sequence[str], seeds: int, log=print, **options
) -> tuple[list[Summary], list[dict]]:
    """``run_benchmark`` on seeds 0 .. ``seeds`` - 1, each in its own work folder; rows summarised."""
    per_seed, infos, fitted_once = [], [], {}
    for seed in range(seeds):
        rows, info, _ = run_benchmark(
            tsv, work / f"seed{seed}", overrides, seed, log, fitted_once=fitted_once, **options
        )
        per_seed.append(rows)
        infos.append(info)
    return summarise(per_seed), infos


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=TSV, help="a BOLD export (BOLD_LAYOUTS), TSV")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads and alignment workers (2 cores)")
    parser.add_argument("--seeds", type=int, default=3, help="splits measured (seeds 0 .. N-1); rows give mean ± sd")
    parser.add_argument(
        "--unseen-rank", choices=UNSEEN_RANKS, default="genus", help="the rank whose groups each give up one species"
    )
    parser.add_argument(
        "--align-sample",
        type=int,
        default=ALIGN_SAMPLE,
        help="seen and as many unseen queries per seed aligned to every key (the all-keys row)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "real_barcodes.json")
    parser.add_argument(
        "--barcodebert",
        action="store_true",
        help="also the BarcodeBERT-style rows (MLM, contrastive; ~17 CPU-minutes more a seed)",
    )
    parser.add_argument("overrides", nargs="*", help="overrides of configs/bench/real_barcodes.yaml")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"real-barcode benchmark: {args.data} is absent; nothing to measure", file=sys.stderr)
        return 2
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: need at least 1")
    try:
        column_overrides(args.data)
    except ValueError as err:
        print(f"real-barcode benchmark: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    load_start = os.getloadavg()
    with TemporaryDirectory() as work:
        summaries, infos = run_seeds(
            args.data,
            Path(work),
            args.overrides,
            args.seeds,
            barcodebert=args.barcodebert,
            unseen_rank=args.unseen_rank,
            align_sample=args.align_sample,
            threads=args.threads,
        )
        table_s, table_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        line, goal = verdict(summaries, ALIGN_ROW, GOAL_ROW, RECIPE_ROW, is_baseline)
        print()
        print("\n".join(table_lines(summaries)))
        print(f"\n{line}\ntable {table_s:.0f} s wall, {table_cpu_s:.0f} s CPU, torch threads {args.threads}")
        report = {
            "data": str(args.data),
            "seeds": args.seeds,
            "unseen_rank": args.unseen_rank,
            "protocol": infos,
            "overrides": args.overrides,
            "recipe": recipe_overrides(),
            "rows": [
                {
                    "method": s.method,
                    "mean": s.mean,
                    "sd": s.sd,
                    "seconds": s.seconds,
                    "query_ms": s.query_ms,
                    "per_seed": [dataclasses.asdict(r) for r in s.per_seed],
                }
                for s in summaries
            ],
            "table_markdown": table_lines(summaries, markdown=True),
            "goal": goal,
            "verdict": line,
            "seconds": table_s,
            "cpu_seconds": table_cpu_s,
            "threads": args.threads,
            "load_average_start": list(load_start),
            "load_average": list(os.getloadavg()),
            "notes": [
                "MLM pretraining and the 'all barcodes' k-mer table are unsupervised and see every barcode of the "
                "file (queries and unseen species included); the 'seen keys' rows never see a query or an unseen "
                "barcode.",
                "Contrastive training sees only the seen species' key rows.",
                f"The all-keys alignment row runs on a seeded sample of {args.align_sample} seen and as many unseen "
                "queries per seed, beside the top-50 row's picks for the same queries.",
                "DNA->text: species top-1 of seen queries, genus top-1 of unseen queries, against the seen keys' "
                "taxonomy strings.",
            ],
        }
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
