"""bench/real_barcodes.py on a BOLD-style TSV built here (``--data``): every row, the verdict, the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.real_barcodes import (
    GOAL_ROW,
    RECIPE_ALL_ROW,
    RECIPE_ALL_UNTRAINED,
    RECIPE_ROW,
    RECIPE_UNTRAINED,
    TFIDF_ROW,
    main,
    recipe_overrides,
)

TINY = [  # every tower and schedule cut to a few seconds
    "model.embed_dim=8",
    "model.dna.k=4",
    "model.dna.hidden_size=8",
    "model.dna.num_heads=2",
    "model.dna.intermediate_size=16",
    "model.dna.max_nucleotides=60",
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
def test_any_bold_file_gets_every_row_and_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report.json"
    assert (
        main(
            [
                "--data",
                str(_bold_tsv(tmp_path / "mine.tsv")),
                "--threads",
                "1",
                "--out",
                str(out),
                "--barcodebert",
                *TINY,
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    # 4 genera of two species: one unseen species each (16 rows); the other 16 halved into keys and queries.
    counts = {"records": 32, "skipped": 0, "key": 8, "query_seen": 8, "query_unseen": 16, "unseen_species": 4}
    assert {k: report["protocol"][k] for k in counts} == counts
    methods = [r["method"] for r in report["rows"]]
    assert methods == [
        "k-mer 1-NN k=4",
        "k-mer 1-NN k=6",
        GOAL_ROW,
        TFIDF_ROW,
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
    assert kmer8["seen_species"] == 1.0  # one substitution within a species, four between sister species
    assert report["recipe"] == recipe_overrides()
    # The strict table is fitted on the 8 seen keys' barcodes, the other on all 32 (no labels either way).
    assert report["protocol"]["k-mer table (seen_keys)"]["barcodes"] == 8
    assert report["protocol"]["k-mer table (all)"]["barcodes"] == 32
    assert report["verdict"].startswith("verdict: best learned row")
    assert report["verdict"] in capsys.readouterr().out


def test_recipe_file_becomes_overrides() -> None:
    assert "model.dna.pooling=kmer_bag" in recipe_overrides()
    assert "pretrain.objective=kmer_spectral" in recipe_overrides()
    assert "train.rank_weights.genus=0.3" in recipe_overrides()


def test_curve_plot_has_a_panel_per_column(tmp_path: Path) -> None:
    import matplotlib.image

    from bench.real_barcodes import COLUMNS, Row, plot_curve

    kmer = [Row(f"k-mer 1-NN k={k}", 0.9, 0.7, 0.8, None, None, 0.1) for k in (4, 6, 8)]
    points = [{"factor": f, "seen_species": 0.5, "unseen_genus": 0.3, "unseen_family": 0.4} for f in (0.25, 1, 4)]
    plot_curve(points, kmer, tmp_path / "curve.png")
    height, width, _ = matplotlib.image.imread(tmp_path / "curve.png").shape
    assert width == 4 * len(COLUMNS) * 120 and height == int(3.6 * 120)
