"""Same config and seed, same numbers: two CPU training runs log identical losses and save
identical weights; two evaluations of one checkpoint, each embedding from scratch (separate
caches), write byte-identical results.json files and identical embeddings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from clibd.cli import main
from clibd.train.loop import train
from tests.helpers.tiny_run import logged, tiny_config

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]


def test_same_config_and_seed_give_the_same_losses_and_weights(data, finished_run, tmp_path) -> None:
    again = tmp_path / "again"
    train(tiny_config(data, "train.checkpoint_every_steps=2"), again)
    first, second = logged(finished_run), logged(again)
    assert sorted(first) == list(range(1, 9)) and first == second  # exact, not approximate
    a, b = (load_file(run / "model" / "model.safetensors") for run in (finished_run, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other_seed = tmp_path / "other_seed"
    train(tiny_config(data, "train.seed=1", "train.max_steps=2"), other_seed)
    assert logged(other_seed)[1] != first[1]  # the seed does reach the run


def test_two_evaluations_of_one_checkpoint_write_identical_results(data, finished_run, tmp_path) -> None:
    outs = []
    for name in ("a", "b"):
        out, cache = tmp_path / f"eval-{name}", tmp_path / f"cache-{name}"
        args = ["eval", "--checkpoint", str(finished_run / "model"), "--split", "val", "--out", str(out),
                f"data.cache_dir={cache}"]  # fmt: skip
        assert main(args) == 0
        outs.append((out, cache))
    (a, cache_a), (b, cache_b) = outs
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    counts = json.loads((a / "results.json").read_text())["meta"]["counts"]
    splits = pd.read_csv(data["csv"], dtype="string")["split"]
    keys, seen, unseen = (int(splits.isin(names).sum()) for names in (["train", "key_unseen"], ["val"], ["val_unseen"]))
    assert counts["keys"] == {m: keys for m in ("image", "dna", "text")} and seen > 0 and unseen > 0
    assert counts["queries"] == {
        "seen": {m: seen for m in ("image", "dna", "text")},
        "unseen": {m: unseen for m in ("image", "dna", "text")},
    }
    embeddings_a = sorted(cache_a.rglob("*.npy"))
    assert len(embeddings_a) >= 3, "each evaluation embeds into its own cache"
    for path in embeddings_a:
        assert np.array_equal(np.load(path), np.load(cache_b / path.relative_to(cache_a))), path.name
