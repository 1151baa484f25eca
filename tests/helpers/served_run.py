"""A small trained run on real data for the `clibd serve` tests: real BOLD barcodes with the
real BIOSCAN photos (tests/helpers/real_table.py), a tiny three-tower model trained a few
steps (train_log.jsonl), evaluated by `clibd eval` (results, accuracy.png, the embedding map)
and a DNA reference library built from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clibd.cli import main
from clibd.config import load_config
from clibd.taxonomy import taxonomy_text
from tests.helpers.learnable_specimens import write_text_model
from tests.helpers.real_table import real_table


@dataclass(frozen=True)
class ServedRun:
    run: Path
    checkpoint: Path
    index: Path


def served_run(folder: Path) -> ServedRun:
    table = real_table()
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "specimens.csv", index=False)
    text = write_text_model(
        folder / "text", taxonomy_text(table, "{order} {family} {genus} {species}", "not_classified").tolist()
    )
    cfg = load_config(None, [
        "data.format=tabular", f"data.root={folder / 'specimens.csv'}", f"data.cache_dir={folder / 'cache'}",
        "data.num_workers=0", "data.augment.enabled=false",
        "model.embed_dim=16", "model.image.name=test_vit", "model.image.image_size=32",
        "model.dna.k=4", "model.dna.max_nucleotides=660", "model.dna.hidden_size=32", "model.dna.num_layers=1",
        "model.dna.num_heads=2", "model.dna.intermediate_size=64", f"model.text.name={text}",
        "train.batch_size=8", "train.epochs=6", "train.lr=2e-3", "train.lr_reference_batch=0",
        "train.log_every_steps=1", "train.trackers=[]", "eval.batch_size=16",
    ])  # fmt: skip
    from clibd.train.loop import train

    run = folder / "run"
    train(cfg, run)
    checkpoint = run / "model"
    assert main(["eval", "--checkpoint", str(checkpoint)]) == 0
    assert (
        main(["index", "build", "--checkpoint", str(checkpoint), "--modality", "dna", "--out", str(folder / "index")])
        == 0
    )
    return ServedRun(run, checkpoint, folder / "index")
