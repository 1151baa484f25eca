"""data.split=auto: any labelled table split by the BIOSCAN-5M rules, seeded, written beside the
run, and read back from that file by the run's evaluation (clibd.data.species_split)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clibd.config import load_config
from clibd.data.sources import read_specimens
from clibd.data.species_split import auto_split, read_split_file, write_split_file
from tests.data_paths import BOLD_4K, needs_shared_data

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "identify" / "dna_text.yaml"


def _cfg(*overrides: str):
    return load_config(CONFIG, [f"data.root={BOLD_4K}", *overrides])


@needs_shared_data
def test_auto_split_of_real_barcodes_follows_the_bioscan5m_rules() -> None:
    table, skips = read_specimens(_cfg().data)  # a BOLD TSV, its columns recognised without a mapping
    assert skips.read == 4278 and len(table) == 4278
    counts = table["split"].value_counts().to_dict()
    assert counts == {"train": 2121, "test": 761, "key_unseen": 627, "val": 382, "test_unseen": 259, "val_unseen": 128}
    species = {split: set(rows["species"]) for split, rows in table.groupby("split")}
    seen, unseen = species["train"], species["key_unseen"] | species["val_unseen"] | species["test_unseen"]
    assert not seen & unseen  # a held-out species is never trained on
    assert species["val"] | species["test"] <= seen  # every seen query's species has training rows (keys)
    assert species["val_unseen"] | species["test_unseen"] <= species["key_unseen"]  # ... and unseen ones keys
    multi = table.groupby("genus")["species"].nunique()
    held = table[table["split"].isin(["key_unseen", "val_unseen", "test_unseen"])]
    assert (held.groupby("genus")["species"].nunique() == 1).all()  # one species per multi-species genus
    assert set(held["genus"]) == set(multi[multi >= 2].index)
    assert auto_split(table, seed=0).equals(table["split"]) and not auto_split(table, seed=1).equals(table["split"])


def test_a_split_that_is_neither_a_word_nor_a_file_is_refused_at_load(tmp_path) -> None:
    from clibd.config import ConfigError

    with pytest.raises(ConfigError, match="data.split='atuo': expected 'column'.*'auto'.*or an existing split file"):
        load_config(CONFIG, ["data.split=atuo"])
    (tmp_path / "split.tsv").write_text("processid\tsplit\n")
    assert load_config(CONFIG, [f"data.split={tmp_path / 'split.tsv'}"]).data.split == str(tmp_path / "split.tsv")


def test_rows_without_a_species_are_pretrain_rows() -> None:
    table = pd.DataFrame(
        {
            "processid": ["a", "b", "c", "d"],
            "genus": ["G", "G", None, "H"],
            "species": ["G x", None, "Q y", "H z"],
        }
    )
    assert auto_split(table).tolist()[1:3] == ["pretrain", "pretrain"]


@needs_shared_data
def test_the_written_split_file_reproduces_the_split(tmp_path) -> None:
    table, _ = read_specimens(_cfg().data)
    path = write_split_file(table, tmp_path)
    again, _ = read_specimens(_cfg(f"data.split={path}").data)
    assert again["split"].equals(table["split"]) and again["processid"].equals(table["processid"])
    short = tmp_path / "short.tsv"
    pd.read_csv(path, sep="\t").iloc[1:].to_csv(short, sep="\t", index=False)
    with pytest.raises(ValueError, match="record 'TTMDI640-10' \\(row 0\\): no split"):
        read_specimens(_cfg(f"data.split={short}", "data.bad_records=error").data)
    missing = pd.Series(["x"])
    with pytest.raises(FileNotFoundError, match="split file not found"):
        read_split_file(tmp_path / "none.tsv", missing)
    (tmp_path / "bad.tsv").write_text("id\tsplit\nx\ttrain\n")
    with pytest.raises(ValueError, match="needs columns processid and split; missing \\['processid'\\]"):
        read_split_file(tmp_path / "bad.tsv", missing)


@pytest.mark.slow  # ~30 s: a 2-step training run and the evaluation of 4,278 real barcodes
@needs_shared_data
def test_training_with_an_auto_split_writes_it_and_its_evaluation_reads_it(tmp_path) -> None:
    from accelerate import PartialState

    from clibd.eval.evaluator import RetrievalEvaluator
    from clibd.models.clibd_model import CLIBDModel
    from clibd.train.loop import train

    small = ["model.embed_dim=32", "model.dna.hidden_size=32", "model.text.hidden_size=32", "train.max_steps=2"]
    cfg = _cfg(f"out_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}", "train.cpu_threads=1", *small)
    result = train(cfg, tmp_path)
    written = load_config(tmp_path / "config.yaml")
    assert written.data.split == str((tmp_path / "split.tsv").resolve())
    split = pd.read_csv(tmp_path / "split.tsv", sep="\t")
    assert len(split) == 4278 and split["split"].value_counts()["train"] == 2121
    evaluator = RetrievalEvaluator(written, "test", state=PartialState())
    metrics = evaluator.run(CLIBDModel.from_pretrained(result.model_dir), tmp_path / "eval")
    assert 0.0 <= metrics["mean_top1"] <= 1.0
    meta = evaluator.document["meta"]
    assert meta["counts"]["keys"]["dna"] == 2121 + 627  # train + key_unseen of the written split
