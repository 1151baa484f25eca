"""bench/real_barcodes.py on a BOLD-style TSV built here (``--data``): every row, the verdict, the JSON; the
alignment 1-NN on real barcodes; rows over seeds (mean, sd, paired deviations); the unseen rank; BOLD's layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.real_barcodes import (
    ALIGN_ALL_ROW,
    ALIGN_ROW,
    ALIGN_SAMPLE_ROW,
    GOAL_ROW,
    RECIPE_ALL_ROW,
    RECIPE_ALL_UNTRAINED,
    RECIPE_ROW,
    RECIPE_TOKENS_ROW,
    RECIPE_UNTRAINED,
    TFIDF_ROW,
    column_overrides,
    is_baseline,
    load_split,
    main,
    recipe_overrides,
)
from bench.real_barcodes_summary import Row, paired_difference, summarise, verdict
from clibd.eval.alignment_search import alignment_nearest, prefilter
from clibd.eval.dna_benchmark import ROLE_UNSEEN
from tests.data_paths import BOLD_4K, BOLD_NL, needs_shared_data

TINY = [  # every tower and schedule cut to a few seconds
    "model.embed_dim=8",
    "model.dna.k=4",
    "model.dna.hidden_size=8",
    "model.dna.num_heads=2",
    "model.dna.intermediate_size=16",
    "model.dna.max_nucleotides=60",
    "model.dna.kmer_patterns=['1111','11011']",
    "model.text.hidden_size=8",
    "model.text.intermediate_size=16",
    "model.text.vocab_size=200",
    "train.epochs=1",
    "train.batch_size=8",
    "pretrain.epochs=1",
    "pretrain.batch_size=8",
]


def _bold_tsv(path: Path) -> Path:
    """2 families x 2 genera x 2 species x 4 specimens; each level mutates its parent's 60-mer."""
    rng = np.random.default_rng(0)

    def mutate(seq: np.ndarray, n: int) -> np.ndarray:
        out = seq.copy()
        at = rng.choice(len(seq), n, replace=False)
        out[at] = (out[at] + rng.integers(1, 4, n)) % 4
        return out

    rows, root = [], rng.integers(0, 4, 60)
    for f in range(2):
        family = mutate(root, 20)
        for g in range(2):
            genus = mutate(family, 8)
            for s in range(2):
                species = mutate(genus, 4)
                for i in range(4):
                    seq = "".join("ACGT"[b] for b in mutate(species, 1))
                    rows.append(
                        {
                            "processid": f"P{f}{g}{s}{i}",
                            "order_name": "Diptera",
                            "family_name": f"Fam{f}",
                            "genus_name": f"Gen{f}{g}",
                            "species_name": f"Gen{f}{g} sp{s}",
                            "nucleotides": seq,
                        }
                    )
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


@pytest.mark.slow
def test_any_bold_file_gets_every_row_over_seeds_and_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report.json"
    args = ["--data", str(_bold_tsv(tmp_path / "mine.tsv")), "--threads", "1", "--seeds", "2", "--out", str(out)]
    assert main([*args, "--barcodebert", *TINY]) == 0
    report = json.loads(out.read_text())
    # 4 genera of two species: one unseen species each (16 rows); the other 16 halved into keys and queries.
    counts = {"records": 32, "skipped": 0, "key": 8, "query_seen": 8, "query_unseen": 16, "unseen_species": 4}
    assert [{k: seed[k] for k in counts} for seed in report["protocol"]] == [counts, counts]
    methods = [r["method"] for r in report["rows"]]
    assert methods == [
        "k-mer 1-NN k=4",
        "k-mer 1-NN k=6",
        GOAL_ROW,
        TFIDF_ROW,
        RECIPE_TOKENS_ROW,
        ALIGN_ROW,
        ALIGN_SAMPLE_ROW,
        ALIGN_ALL_ROW,
        "DNA tower untrained",
        "MLM-pretrained (all file barcodes, no labels)",
        "contrastive DNA+text (seen keys)",
        "MLM then contrastive DNA+text",
        "MLM (seen keys only) then contrastive",
        RECIPE_ALL_UNTRAINED,
        RECIPE_ALL_ROW,
        RECIPE_UNTRAINED,
        RECIPE_ROW,
    ]
    kmer8 = report["rows"][2]
    assert [r["seen_species"] for r in kmer8["per_seed"]] == [1.0, 1.0]  # one substitution within a species
    assert kmer8["mean"]["seen_species"] == 1.0 and kmer8["sd"]["seen_species"] == 0.0
    # 60-nt reads never overlap by the 100 aligned columns an identity needs: every query falls back to k-mer-8.
    assert report["protocol"][0]["alignment"]["unaligned_queries"] == 24
    assert report["rows"][5]["per_seed"][0]["seen_species"] == kmer8["per_seed"][0]["seen_species"]
    assert report["recipe"] == recipe_overrides()
    # The strict table is fitted on the 8 seen keys' barcodes, the other on all 32 (no labels either way).
    assert report["protocol"][1]["k-mer table (seen_keys)"]["barcodes"] == 8
    assert report["protocol"][1]["k-mer table (all)"]["barcodes"] == 32
    assert report["verdict"].startswith("verdict over 2 seed(s)")
    assert report["verdict"] in capsys.readouterr().out
    assert report["table_markdown"][0].startswith("| method | seen species")


def test_unseen_rank_family_gives_up_one_species_per_family(tmp_path: Path) -> None:
    tsv = _bold_tsv(tmp_path / "mine.tsv")
    overrides = [*column_overrides(tsv), f"data.cache_dir={tmp_path / 'cache'}"]
    _, by_genus, info = load_split(tsv, overrides, seed=0)
    _, by_family, family_info = load_split(tsv, overrides, seed=0, unseen_rank="family")
    assert info["unseen_species"] == 4 and family_info["unseen_species"] == 2
    unseen = by_family.table[by_family.roles == ROLE_UNSEEN]
    assert unseen.groupby("family")["species"].nunique().to_dict() == {"Fam0": 1, "Fam1": 1}
    assert family_info["query_unseen"] == 8 and family_info["key"] + family_info["query_seen"] == 24


def test_rows_lacking_a_rank_are_dropped_and_counted(tmp_path: Path) -> None:
    tsv = _bold_tsv(tmp_path / "mine.tsv")
    table = pd.read_csv(tsv, sep="\t")
    table.loc[0, "species_name"] = "None"  # a data package's word for an unknown rank
    table.loc[1, "genus_name"] = ""
    table.to_csv(tsv, sep="\t", index=False)
    _, split, info = load_split(tsv, [*column_overrides(tsv), f"data.cache_dir={tmp_path / 'cache'}"], seed=0)
    assert info["lacking_family_genus_or_species"] == 2 and info["records"] == 30 and len(split.table) == 30


def test_a_bold_data_package_is_mapped_and_other_files_are_named(tmp_path: Path) -> None:
    package = tmp_path / "package.tsv"
    renamed = {"nucleotides": "nuc", "order_name": "order", "family_name": "family"}
    renamed |= {"genus_name": "genus", "species_name": "species"}
    pd.read_csv(_bold_tsv(tmp_path / "mine.tsv"), sep="\t").rename(columns=renamed).to_csv(
        package, sep="\t", index=False
    )
    assert "data.columns.dna_barcode=nuc" in column_overrides(package)
    assert "data.columns.dna_barcode=nucleotides" in column_overrides(tmp_path / "mine.tsv")
    other = tmp_path / "other.tsv"
    pd.DataFrame({"processid": ["P1"], "sequence": ["ACGT"]}).to_csv(other, sep="\t", index=False)
    with pytest.raises(ValueError, match="other.tsv: not a BOLD export: needs the columns of"):
        column_overrides(other)
    assert main(["--data", str(other), "--out", str(tmp_path / "r.json")]) == 2


@needs_shared_data
def test_the_public_data_package_splits_by_family(tmp_path: Path) -> None:
    """bold_public_nl_515.tsv: BOLD data-package columns, alignment gaps and lower-case bases."""
    _, split, info = load_split(BOLD_NL, [*column_overrides(BOLD_NL), f"data.cache_dir={tmp_path}"], 0, "family")
    assert info["records"] == 515 and info["lacking_family_genus_or_species"] == 0
    assert info["unseen_species"] == split.table.groupby("family")["species"].nunique().ge(2).sum() == 27


# ---- alignment 1-NN (clibd.eval.alignment_search) on real barcodes -----------------------------------


@needs_shared_data
def test_alignment_picks_the_most_identical_candidate_and_breaks_ties_by_the_prefilter() -> None:
    table = pd.read_csv(BOLD_4K, sep="\t").set_index("processid")
    query = table.loc["CNPPD843-12", "nucleotides"]  # Ampedus fuscatus
    # Its k-mer-8 nearest is an Athous; an Ampedus key is less k-mer-similar but more identical.
    names = ["TTCFW256-08", "RRMFC1997-15", "SSBAA5486-12", "TTCFW256-08"]  # Athous, Ampedus, Selatosomus, Athous
    keys = table.loc[names, "nucleotides"].tolist()
    assert prefilter([query], keys, None).tolist() == [[0, 3, 1, 2]]  # the duplicate Athous: equal cosine, later
    every = alignment_nearest([query], keys, candidates=None)
    assert every.key.tolist() == [1] and every.unaligned == 0
    assert every.identity[0] == pytest.approx(100 * 502 / 583)  # 502 agreeing of 583 aligned columns
    # Top 1 and top 2 (both Athous copies, 556 / 664 identical each): the first in prefilter order.
    for candidates in (1, 2):
        hits = alignment_nearest([query], keys, candidates=candidates, threads=2)
        assert hits.key.tolist() == [0] and hits.identity[0] == pytest.approx(100 * 556 / 664)
    assert alignment_nearest([query], keys, candidates=3).key.tolist() == [1]


def test_a_query_no_key_overlaps_enough_takes_its_kmer_nearest_key() -> None:
    rng = np.random.default_rng(0)
    read = "".join(rng.choice(list("ACGT"), 300))
    keys = [read[:80], "".join(rng.choice(list("ACGT"), 90))]  # both shorter than the 100 columns asked for
    hits = alignment_nearest([read], keys, candidates=None)
    assert hits.key.tolist() == [0] and np.isnan(hits.identity[0]) and hits.unaligned == 1


# ---- rows over seeds ---------------------------------------------------------------------------------


def _row(method: str, species: float, genus: float, family: float, text: float | None = None) -> Row:
    return Row(method, species, genus, family, text, text, seconds=1.0, query_ms=0.5)


def test_seeds_give_each_row_its_mean_and_sd() -> None:
    seeds = [
        [_row("a", 0.9, 0.8, 0.7), _row("b", 1.0, 0.5, 0.5, 0.4)],
        [_row("a", 1.0, 0.6, 0.7), _row("b", 1.0, 0.5, 0.5, 0.6)],
    ]
    a, b = summarise(seeds)
    assert a.mean["seen_species"] == pytest.approx(0.95) and a.sd["seen_species"] == pytest.approx(0.1 / 2**0.5)
    assert a.mean["unseen_family"] == pytest.approx(0.7) and a.sd["unseen_family"] == pytest.approx(0.0)
    assert a.mean["text_species"] is None and b.mean["text_species"] == pytest.approx(0.5)
    assert summarise(seeds[:1])[0].sd["seen_species"] is None
    # Paired: the per-seed differences a - b on genus are +0.3 and +0.1.
    assert paired_difference(a, b, "unseen_genus") == pytest.approx((0.2, 0.1 * 2**0.5))
    with pytest.raises(ValueError, match="seeds measured different rows"):
        summarise([seeds[0], seeds[1][:1]])


def test_verdict_compares_means_and_names_a_difference_within_the_deviation() -> None:
    align, kmer = "alignment 1-NN", "k-mer 1-NN k=8"
    seeds = [
        [_row(align, 0.99, 0.84, 0.90), _row(kmer, 0.99, 0.78, 0.85), _row("ours", 0.985, 0.85, 0.96, 0.9)],
        [_row(align, 0.98, 0.86, 0.91), _row(kmer, 0.98, 0.77, 0.86), _row("ours", 0.985, 0.85, 0.97, 0.9)],
    ]
    line, report = verdict(summarise(seeds), align, kmer, "strict", is_baseline)
    assert report["best_learned"] == "ours" and report["goal_met"] is True
    genus = report[align]["unseen_genus"]  # per seed +0.01 and -0.01: mean 0, sd 0.014
    assert genus["difference"] == pytest.approx(0.0) and genus["within_deviation"] is True
    assert report[align]["unseen_family"]["within_deviation"] is False  # +0.06 both seeds
    assert "unseen genus 0.850 vs 0.850 (+0.000, sd 0.014: within the deviation)" in line
    assert "MEETS the goal" in line
    seeds[0][2] = _row("ours", 0.97, 0.85, 0.96, 0.9)
    assert verdict(summarise(seeds), align, kmer, "strict", is_baseline)[1]["goal_met"] is False  # species 0.9775


def test_recipe_file_becomes_overrides() -> None:
    assert "model.dna.pooling=kmer_bag" in recipe_overrides()
    assert "pretrain.objective=kmer_spectral" in recipe_overrides()
    assert "train.rank_weights.genus=0.3" in recipe_overrides()
