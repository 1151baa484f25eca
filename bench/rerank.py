"""The barcoder's answer on real BOLD barcodes: the embedding, the embedding re-ranked by % identity,
k-mer-8 1-NN and alignment 1-NN, one table, one run; and their speed on a 100k-key library.

``python bench/rerank.py [--data FILE.tsv] [--checkpoint MODEL] [--queries-100k 200] [--out bench/rerank.json]``

Protocol (``clibd.data.species_split.unseen_species_split``, seed 0, the DNA bench's): one seeded
unseen species per multi-species genus; seen species' rows halved into keys and queries; unseen
rows query the seen keys. Columns: macro top-1 of seen queries at species, of unseen queries at
genus and family; milliseconds per query (all queries, one thread for the aligner, wall time).

Rows:

- **embedding alone**: cosine 1-NN of the model's DNA embeddings (the FAISS index a library of that
  many keys gets by default, ``eval.index: auto``: exact below 100,000 keys, ivfpq from there);
- **embedding + identity re-rank** (``clibd.index.identity.rerank_by_identity``, its defaults: the
  10 nearest keys, those within 0.1 cosine of the nearest re-ranked by % identity, one aligned
  key per species), the 1-NN after the re-rank;
- **k-mer-8 1-NN**: cosine 1-NN of overlapping 8-mer count vectors (the shared data's reference);
- **alignment 1-NN**: each query's 50 keys of highest k-mer-8 cosine, each aligned
  (``clibd.data.alignment.percent_identity``), the one of highest identity (ties: the higher
  k-mer cosine; no candidate overlapping 100 columns: the k-mer nearest). The definition of the
  DNA bench's alignment row (bench/real_barcodes.py), computed here in the same run.

Model: ``--checkpoint`` (a CLIBD model with a DNA tower), or by default the recipe's DNA tower
(configs/bench/dna_recipe.yaml over configs/bench/real_barcodes.yaml: a bag of overlapping 8-mers,
512 wide) with its table fitted on the seen keys' barcodes only, no label, no training step.

Speed on a 100k-key library: the keys plus mutated copies of them up to 100,000 keys. A copy is a
key's barcode with each base substituted at random with probability 1 % (a random other base;
BOLD's intraspecific divergence is mostly below 2 %) and the key's taxonomy, so each species has
~47 keys, as in a large library of common species. ``--queries-100k`` queries (half seen, half
unseen, seeded sample) are answered by the re-rank (embedding of the query, exact search, re-rank)
and by alignment 1-NN (k-mer-8 vectors, prefilter over the 100k keys, 50 alignments); the ratio
of their times is the speed-up. Both use one thread for the aligner; figures are wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from bench.common import REPO, SHARED_DATA  # noqa: E402
from bench.real_barcodes import CONFIG, recipe_overrides  # noqa: E402
from clibd.config import load_config  # noqa: E402
from clibd.data.sources import read_specimens  # noqa: E402
from clibd.data.species_split import ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN, unseen_species_split  # noqa: E402
from clibd.embed.embedder import Embedder  # noqa: E402
from clibd.eval.alignment_search import best_identity, kmer_vectors, nearest_by_kmer  # noqa: E402
from clibd.eval.metrics import topk_accuracy  # noqa: E402
from clibd.index.faiss_index import ReferenceIndex  # noqa: E402
from clibd.index.identity import CANDIDATES, MARGIN, Rerank, rerank_by_identity  # noqa: E402
from clibd.index.key_barcodes import KeyBarcodes  # noqa: E402
from clibd.models.clibd_model import CLIBDModel  # noqa: E402
from clibd.taxonomy import label_codes  # noqa: E402
from clibd.train.build import build_model  # noqa: E402

TSV = SHARED_DATA / "dna" / "bold_insecta_4k.tsv"
PREFILTER = 50  # alignment 1-NN: k-mer-8 candidates aligned per query
LIBRARY_KEYS, MUTATION_RATE = 100_000, 0.01
SPEED_GOAL = 10.0  # the bar: the re-rank at 10x alignment 1-NN's speed or better
COLUMNS = ("seen_species", "unseen_genus", "unseen_family")
EMBEDDING, RERANKED, KMER, ALIGNMENT = (
    "embedding alone (cosine 1-NN)",
    f"embedding + identity re-rank ({CANDIDATES} candidates, margin {MARGIN})",
    "k-mer-8 1-NN",
    f"alignment 1-NN (k-mer-8 prefilter of {PREFILTER}, best % identity)",
)


@dataclass
class Row:
    method: str
    seen_species: float
    unseen_genus: float
    unseen_family: float
    ms_per_query: float
    alignments_per_query: float


def macro_top1(queries: pd.DataFrame, hits: pd.DataFrame, ranks: list[str]) -> dict[str, float]:
    """Macro top-1 at each of ``ranks`` of queries whose nearest keys are ``hits`` (row for row)."""
    codes = label_codes(pd.concat([queries[ranks], hits[ranks]]), tuple(ranks))
    scores = topk_accuracy(codes[: len(queries)], codes[len(queries) :][:, None, :], ks=(1,), ranks=tuple(ranks))
    return {rank: scores["macro"][rank]["top1"] for rank in ranks}


@dataclass
class Searches:
    """The four ways to find each query's nearest key, over one set of keys."""

    embed: Callable[[list[str]], np.ndarray]
    index: ReferenceIndex
    barcodes: KeyBarcodes
    rerank: Rerank
    key_barcodes: list[str]
    kmer_keys_t: sp.csc_matrix  # the keys' k-mer-8 vectors, transposed once (clibd.eval.alignment_search)

    def embedding(self, queries: list[str]) -> tuple[np.ndarray, int]:
        return self.index.search(self.embed(queries), 1)[1][:, 0], 0

    def reranked(self, queries: list[str]) -> tuple[np.ndarray, int]:
        scores, positions = self.index.search(self.embed(queries), min(self.rerank.candidates, len(self.index)))
        found = rerank_by_identity(queries, scores, positions, self.barcodes, self.rerank)
        return found.positions[:, 0], found.aligned

    def kmer(self, queries: list[str]) -> tuple[np.ndarray, int]:
        return nearest_by_kmer(kmer_vectors(queries), self.kmer_keys_t, 1)[:, 0], 0

    def alignment(self, queries: list[str]) -> tuple[np.ndarray, int]:
        order = nearest_by_kmer(kmer_vectors(queries), self.kmer_keys_t, PREFILTER)
        return best_identity(queries, self.key_barcodes, order).key, order.size


def searches(keys: pd.DataFrame, embed: Callable[[list[str]], np.ndarray]) -> Searches:
    barcodes = keys["dna_barcode"].astype("string").tolist()
    emb = embed(barcodes)
    # The kind `clibd index build` gives a library by default (eval.index: auto): flat for the 4k keys, ivfpq at 100k.
    index = ReferenceIndex(emb.shape[1], kind="auto", device="cpu")
    index.add(emb, ids=[str(i) for i in range(len(keys))])
    kmer = kmer_vectors(barcodes).T.tocsc()
    return Searches(embed, index, KeyBarcodes(barcodes), Rerank.for_library(keys["species"]), barcodes, kmer)


def timed(search: Callable[[list[str]], tuple[np.ndarray, int]], queries: list[str]) -> tuple[np.ndarray, float, int]:
    start = time.perf_counter()
    nearest, aligned = search(queries)
    return nearest, time.perf_counter() - start, aligned


def mutated_library(keys: pd.DataFrame, total: int, rate: float, seed: int) -> pd.DataFrame:
    """``keys`` and mutated copies of them (module docstring) up to ``total`` rows, vectorised on the
    Arrow buffer of all the copies' barcodes."""
    rng = np.random.default_rng(seed)
    source = np.resize(np.arange(len(keys)), total - len(keys))
    copies = pa.array(keys["dna_barcode"].astype("string").to_numpy(object)[source], type=pa.large_string())
    offsets = np.frombuffer(copies.buffers()[1], dtype=np.int64)[: len(copies) + 1]
    data = np.frombuffer(copies.buffers()[2], dtype=np.uint8)[: offsets[-1]].copy()
    hit = (rng.random(len(data)) < rate) & np.isin(data, np.frombuffer(b"ACGT", np.uint8))
    shift = rng.integers(1, 4, hit.sum())  # a different base: A C G T rotated by 1-3
    bases = np.frombuffer(b"ACGT", np.uint8)
    data[hit] = bases[(np.searchsorted(bases, data[hit]) + shift) % 4]
    mutated = pa.LargeStringArray.from_buffers(len(copies), pa.py_buffer(offsets), pa.py_buffer(data))
    rows = keys.iloc[source].assign(dna_barcode=mutated.to_pylist(), processid=[f"copy{i}" for i in range(len(source))])
    return pd.concat([keys, rows], ignore_index=True)


def run(tsv: Path, checkpoint: Optional[str], queries_100k: int, seed: int, log: Callable[[str], None]) -> dict:
    cfg = load_config(CONFIG, [f"data.root={tsv}", *recipe_overrides(), "model.text.enabled=false"])
    table, _ = read_specimens(cfg.data, require_image=False)
    roles = unseen_species_split(table, seed).to_numpy()
    keys = table[roles == ROLE_KEY].reset_index(drop=True)
    if checkpoint:
        model = CLIBDModel.from_pretrained(checkpoint)
    else:
        cfg.model.dna.init = "kmer_spectral"
        model = build_model(cfg, keys, None)  # the recipe's table fitted on the seen keys' barcodes, no labels
    embedder = Embedder(model, device="cpu", batch_size=256)

    def embed(sequences: list[str]) -> np.ndarray:
        return embedder.embed_dna(sequences)[0]

    start = time.perf_counter()
    small = searches(keys, embed)
    log(f"4k: {len(keys)} keys indexed in {time.perf_counter() - start:.1f} s")
    rows = []
    methods = (
        (EMBEDDING, small.embedding),
        (RERANKED, small.reranked),
        (KMER, small.kmer),
        (ALIGNMENT, small.alignment),
    )
    for name, search in methods:
        scores, seconds, aligned, n = {}, 0.0, 0, 0
        for role, ranks in ((ROLE_SEEN, ["species"]), (ROLE_UNSEEN, ["genus", "family"])):
            queries = table[roles == role].reset_index(drop=True)
            nearest, took, count = timed(search, queries["dna_barcode"].astype("string").tolist())
            scores |= macro_top1(queries, keys.iloc[nearest].reset_index(drop=True), ranks)
            seconds, aligned, n = seconds + took, aligned + count, n + len(queries)
        rows.append(Row(name, scores["species"], scores["genus"], scores["family"], 1000 * seconds / n, aligned / n))
        log(f"4k: {rows[-1]}")
    by_name = {row.method: row for row in rows}
    meets = all(getattr(by_name[RERANKED], c) >= getattr(by_name[ALIGNMENT], c) for c in COLUMNS)

    start = time.perf_counter()
    library = mutated_library(keys, LIBRARY_KEYS, MUTATION_RATE, seed)
    large = searches(library, embed)
    log(f"100k: {len(library)} keys made and indexed in {time.perf_counter() - start:.1f} s")
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(roles == role), queries_100k // 2, replace=False) for role in (ROLE_SEEN, ROLE_UNSEEN)
    ]
    sample = table.iloc[np.concatenate(picked)]["dna_barcode"].astype("string").tolist()
    speed = {}
    for name, search in ((RERANKED, large.reranked), (ALIGNMENT, large.alignment), (EMBEDDING, large.embedding)):
        _, seconds, aligned = timed(search, sample)
        speed[name] = {"ms_per_query": 1000 * seconds / len(sample), "alignments_per_query": aligned / len(sample)}
        log(f"100k: {name}: {speed[name]}")
    ratio = speed[ALIGNMENT]["ms_per_query"] / speed[RERANKED]["ms_per_query"]
    return {
        "data": str(tsv),
        "model": checkpoint or "recipe DNA tower, table fitted on the seen keys' barcodes (no labels, no training)",
        "counts": {role: int((roles == role).sum()) for role in (ROLE_KEY, ROLE_SEEN, ROLE_UNSEEN)},
        "rows": [asdict(row) for row in rows],
        "rerank_at_least_alignment_on_every_column": meets,
        "library_100k": {
            "keys": len(library),
            "mutation_rate": MUTATION_RATE,
            "queries": len(sample),
            "speed": speed,
            "speedup_over_alignment": ratio,
            "goal": SPEED_GOAL,
            "meets_goal": ratio >= SPEED_GOAL,
        },
    }


def markdown(result: dict) -> str:
    lines = [
        "| method | seen species | unseen genus | unseen family | ms / query | alignments / query |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | {row['seen_species']:.4f} | {row['unseen_genus']:.4f} | "
            f"{row['unseen_family']:.4f} | {row['ms_per_query']:.2f} | {row['alignments_per_query']:.2f} |"
        )
    large = result["library_100k"]
    lines += ["", f"100k-key library ({large['keys']} keys, {large['queries']} queries):", ""]
    lines += ["| method | ms / query | alignments / query |", "|---|---|---|"]
    for name, figures in large["speed"].items():
        lines.append(f"| {name} | {figures['ms_per_query']:.2f} | {figures['alignments_per_query']:.2f} |")
    lines += [
        "",
        f"re-rank >= alignment 1-NN on every column: {result['rerank_at_least_alignment_on_every_column']}; "
        f"speed-up over alignment 1-NN at 100k keys: {large['speedup_over_alignment']:.1f}x "
        f"(goal {large['goal']:.0f}x: {'met' if large['meets_goal'] else 'not met'})",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(TSV), help="a BOLD TSV (default: the shared 4k file)")
    parser.add_argument("--checkpoint", help="a CLIBD model with a DNA tower (default: the recipe's fitted table)")
    parser.add_argument("--queries-100k", type=int, default=200, help="queries timed on the 100k-key library")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "rerank.json"))
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        raise SystemExit(f"bench/rerank.py: data file not found: {args.data}")
    result = run(Path(args.data), args.checkpoint, args.queries_100k, args.seed, lambda line: print(line, flush=True))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
