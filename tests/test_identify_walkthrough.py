"""docs/identify.md end to end, on the shared real barcodes: one half is "your BOLD export", the
other half the new specimens, every tenth of them reverse-complemented. The commands are the
document's (each asserted to appear in it verbatim); training is cut to a few steps here."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clibd.cli import main
from clibd.index.strand import reverse_complement
from tests.data_paths import needs_shared_data

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "identify.md"
RANKS = ["order", "family", "genus", "species"]
TRAIN = "python train.py --config configs/identify/dna_text.yaml --out runs/mine data.root=my_bold_export.tsv"
BUILD = "clibd index build --checkpoint runs/mine/model --from my_bold_export.tsv --modality dna --out library"
INFO = "clibd index info library"
CLASSIFY = (
    "clibd classify --checkpoint runs/mine/model --index library --dna new_specimens.fasta --rerank identity"
    " --format csv --out answers.csv"
)
SERVE = "clibd serve --checkpoint runs/mine/model --index library --rerank identity"


def _run(command: str, *extra: str) -> None:
    """A documented ``clibd ...`` command through the CLI (in the walk-through's folder)."""
    assert main([*shlex.split(command)[1:], *extra]) == 0, command


@pytest.mark.slow  # ~3 minutes on 2 busy cores: a short training run, a library of 2,139 barcodes, 2,139 answers
@needs_shared_data
def test_identify_your_specimens_against_your_own_bold_export(tmp_path, capsys, monkeypatch) -> None:
    from starlette.testclient import TestClient

    from clibd.index.identity import Rerank
    from clibd.serve.app import build_app
    from clibd.serve.service import Classifier
    from tests.helpers.bold_model import bold_halves

    monkeypatch.chdir(tmp_path)  # the walk-through's folder: its relative paths are the document's

    text = DOC.read_text()
    for command in (TRAIN, BUILD, INFO, CLASSIFY, SERVE):
        assert " ".join(command.split()) in " ".join(text.split()), f"docs/identify.md lacks: {command}"
    export, new = bold_halves()
    export.to_csv(tmp_path / "my_bold_export.tsv", sep="\t", index=False)
    flipped = np.arange(len(new)) % 10 == 0
    reads = np.array(new["nucleotides"], dtype=object)
    reads[flipped] = reverse_complement(reads[flipped].tolist())
    (tmp_path / "new_specimens.fasta").write_text("".join(f">{p}\n{s}\n" for p, s in zip(new["processid"], reads)))

    # 1. Train on the export, split by the BIOSCAN-5M rules (a few steps here).
    train = [
        sys.executable,
        str(REPO / "train.py"),
        *shlex.split(TRAIN)[2:],
        "train.max_steps=8",
        "train.cpu_threads=1",
    ]
    train[train.index("--config") + 1] = str(REPO / "configs/identify/dna_text.yaml")
    subprocess.run(train, cwd=tmp_path, check=True)
    assert (tmp_path / "runs/mine/split.tsv").is_file() and (tmp_path / "runs/mine/eval-test/results.json").is_file()

    # 2. The library: every usable row of the export, calibrated on its own species.
    _run(BUILD)
    capsys.readouterr()
    _run(INFO)
    info = capsys.readouterr().out
    meta = json.loads((tmp_path / "library/meta.json").read_text())["metadata"]
    assert meta["provenance"]["sha256"] in info and meta["provenance"]["rows"] == len(export)
    for rank in RANKS:
        assert meta["rank_rules"]["reranked"]["dna"][rank]["balanced_accuracy"] >= 0.85

    # 3. Classify the new specimens, both strands; read identity and the deepest confident rank.
    _run(CLASSIFY)
    answers = pd.read_csv(tmp_path / "answers.csv", keep_default_na=False, na_values=[""]).set_index("id")
    answers = answers.loc[new["processid"]]
    used = (answers["evidence"] == "dna").to_numpy()
    assert used.mean() > 0.99
    assert (answers["strand"][flipped & used] == "-").all() and (answers["strand"][~flipped & used] == "+").all()
    assert answers.loc[used, "identity"].between(0, 100).all() and (answers.loc[used, "overlap"] >= 100).all()
    truth = new.set_index("processid").rename(columns=lambda c: c.replace("_name", ""))
    depth = answers["deepest_confident_rank"].map({r: i + 1 for i, r in enumerate(RANKS)}).fillna(0).to_numpy()
    for i, (rank, bar) in enumerate(zip(RANKS, (0.98, 0.98, 0.97, 0.9))):
        shown = used & (depth > i)
        right = answers[rank].to_numpy()[shown] == truth[rank].to_numpy()[shown]
        assert shown.sum() > 300 and right.mean() >= bar, (rank, shown.sum(), right.mean())
        assert answers[rank][used & (depth <= i)].isna().all()

    # The strand bar: 50 reverse-complemented barcodes get their forward strand's top-1 species.
    pairs = new[flipped].iloc[:50]
    (tmp_path / "forward.fasta").write_text(
        "".join(f">{p}\n{s}\n" for p, s in zip(pairs["processid"], pairs["nucleotides"]))
    )
    _run(CLASSIFY.replace("new_specimens.fasta", "forward.fasta").replace("answers.csv", "forward.csv"))
    forward = pd.read_csv(tmp_path / "forward.csv").set_index("id").loc[pairs["processid"]]
    keys = pd.read_parquet(tmp_path / "library/keys.parquet").set_index("id")["species"]
    reverse = answers.loc[pairs["processid"]]
    assert (keys[forward["nearest_id"]].to_numpy() == keys[reverse["nearest_id"]].to_numpy()).sum() >= 49

    # 4. Serve the same: the health page names the export, the answer is the CLI's.
    assert SERVE.startswith("clibd serve")
    classifier = Classifier("runs/mine/model", "library", rerank=Rerank.for_library)  # --rerank identity
    client = TestClient(build_app(classifier))
    assert client.get("/api/health").json()["provenance"]["sha256"] == meta["provenance"]["sha256"]
    five = "".join(f">{p}\n{s}\n" for p, s in zip(new["processid"][:5], reads[:5]))
    served = client.post("/api/classify", data={"fasta": five}).json()
    assert [s["results"][0]["prediction"]["strand"] for s in served["specimens"]] == ["-", "+", "+", "+", "+"]
