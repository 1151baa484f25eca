"""The training loop end to end on a tiny learnable dataset: resume after SIGTERM, SIGKILL
and a kill mid-checkpoint equals the uninterrupted run; NaN/inf policies; every modality
pair; it learns; and a 2-process ``accelerate launch`` on CPU."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator

import clibd.embed.datasets
import clibd.eval.evaluator
import clibd.train.build
import clibd.train.loop as training
from clibd.config import MEAN_TOP1, TrainConfig, save_config
from clibd.eval.retrieval import flat_metrics
from clibd.models.clibd_model import CLIBDModel
from clibd.taxonomy import taxonomy_text
from clibd.train.checkpoint import CheckpointError, resolve_checkpoint
from clibd.train.loop import NonFiniteError, train
from clibd.train.loss import ContrastiveLoss
from clibd.train.optim import build_scheduler, param_groups, scaled_lr
from clibd.train.validate import Validator
from tests.helpers.tiny_run import logged, tiny_config

REPO = Path(__file__).resolve().parents[1]
# One intra-op thread per process: on a few shared cores OpenMP spin-waiting makes more much slower.
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> dict[int, float]:
    """8 steps (2 epochs of 4), never stopped: the losses every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("uninterrupted")
    result = train(tiny_config(data, "train.checkpoint_every_steps=2"), out)
    assert result.steps == 8 and not result.interrupted
    return logged(out)


def assert_same_losses_after(out: Path, reference: dict[int, float], after: int) -> None:
    resumed = {s: v for s, v in logged(out).items() if s > after}
    assert sorted(resumed) == [s for s in sorted(reference) if s > after]
    for step, loss in resumed.items():
        assert loss == pytest.approx(reference[step], rel=1e-5, abs=1e-6), f"step {step}"


def test_sigterm_checkpoints_then_resume_matches_uninterrupted(data, uninterrupted, tmp_path) -> None:
    out = tmp_path / "run"

    def send_sigterm_after_step_3() -> None:
        log = out / "train_log.jsonl"
        while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=send_sigterm_after_step_3, daemon=True).start()
    stopped = train(tiny_config(data), out)
    assert stopped.interrupted and stopped.model_dir is None
    assert 3 <= stopped.steps < 8
    saved = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert saved["step"] == stopped.steps
    resumed = train(tiny_config(data), out, resume="latest")
    assert resumed.steps == 8 and (out / "model" / "model.safetensors").is_file()
    assert_same_losses_after(out, uninterrupted, after=stopped.steps)


def test_kill_between_checkpoint_renames_leaves_loadable_latest(data, uninterrupted, tmp_path, monkeypatch) -> None:
    """Killed after `last` moved to `last.old` and before the new one took its name."""
    out = tmp_path / "run"
    real_rename = Path.rename

    def rename(self: Path, target):
        if self.name == ".last.tmp" and (self.parent / "last.old").exists():
            raise SystemExit("killed")  # what the process sees of a kill: nothing after this runs
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(SystemExit):
        train(tiny_config(data, "train.checkpoint_every_steps=2"), out)
    monkeypatch.setattr(Path, "rename", real_rename)
    assert not (out / "checkpoints" / "last").exists()
    assert resolve_checkpoint(out, "latest") == out / "checkpoints" / "last.old"
    train(tiny_config(data, "train.checkpoint_every_steps=2"), out, resume="latest")
    assert_same_losses_after(out, uninterrupted, after=2)


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume(data, uninterrupted, tmp_path) -> None:
    """A real `kill -9` of `python train.py` some time after its first checkpoint."""
    out = tmp_path / "run"
    config = tmp_path / "config.yaml"
    save_config(tiny_config(data, "train.checkpoint_every_steps=1", "train.epochs=40", "train.max_steps=8"), config)
    proc = subprocess.Popen(
        [sys.executable, "train.py", "--config", str(config), "--out", str(out), "--no-eval"],
        cwd=REPO,
        env=ONE_THREAD_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "last").is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, "training exited before its first checkpoint"
            time.sleep(0.02)
        time.sleep(float(np.random.default_rng().uniform(0, 1.0)))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    latest = resolve_checkpoint(out, "latest")
    step = json.loads((latest / "trainer_state.json").read_text())["step"]
    assert 1 <= step <= 8
    CLIBDModel.from_pretrained(latest / "model")  # loadable
    if step < 8:
        train(
            tiny_config(data, "train.checkpoint_every_steps=1", "train.epochs=40", "train.max_steps=8"),
            out,
            resume="latest",
        )
    # The 40-epoch horizon capped at 8 steps is a different schedule: compare with a twin run.
    twin = tmp_path / "twin"
    train(tiny_config(data, "train.checkpoint_every_steps=1", "train.epochs=40", "train.max_steps=8"), twin)
    assert_same_losses_after(out, logged(twin), after=step)


class _InfGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


def _poison_second_training_batch(monkeypatch, kind: str) -> None:
    real = ContrastiveLoss.forward
    calls = {"train": 0}

    def forward(self, features, logit_scale, labels=None):
        if torch.is_grad_enabled():
            calls["train"] += 1
            if calls["train"] == 2 and kind == "loss":
                loss, pairs = real(self, features, logit_scale, labels)
                return loss * float("nan"), pairs
            if calls["train"] == 2 and kind == "grad":
                features = {k: _InfGradient.apply(v) for k, v in features.items()}
        return real(self, features, logit_scale, labels)

    monkeypatch.setattr(ContrastiveLoss, "forward", forward)


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_nonfinite_step_is_skipped_and_counted(data, tmp_path, monkeypatch, kind: str) -> None:
    _poison_second_training_batch(monkeypatch, kind)
    out = tmp_path / "run"
    result = train(tiny_config(data, "train.max_steps=3", "train.nan_policy=skip"), out)
    assert result.steps == 3 and result.skipped_nonfinite == 1
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["skipped_nonfinite"] for r in records] == [0, 1, 1]
    weights = CLIBDModel.from_pretrained(out / "model").state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_nonfinite_step_stops_naming_step_and_batch(data, tmp_path, monkeypatch, kind: str) -> None:
    _poison_second_training_batch(monkeypatch, kind)
    with pytest.raises(NonFiniteError, match=r"at step 2 \(epoch 0, batch 1.*processids: \['S\d{4}'"):
        train(tiny_config(data, "train.max_steps=3", "train.nan_policy=stop"), tmp_path / "run")


@pytest.mark.parametrize(
    "disabled,targets,pairs",
    [
        ("text", "identity", ["image-dna"]),
        ("dna", "identity", ["image-text"]),
        ("image", "identity", ["dna-text"]),
        (None, "label", ["image-dna", "image-text", "dna-text"]),
    ],
)
def test_every_modality_subset_trains(data, tmp_path, disabled, targets, pairs) -> None:
    extra = [f"model.{disabled}.enabled=false"] if disabled else []
    out = tmp_path / "run"
    result = train(tiny_config(data, "train.max_steps=2", f"train.loss_targets={targets}", *extra), out)
    assert result.steps == 2 and np.isfinite([loss for _, loss in result.losses]).all()
    record = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert sorted(k.removeprefix("loss/") for k in record if k.startswith("loss/")) == sorted(pairs)
    assert CLIBDModel.from_pretrained(out / "model").modalities == tuple(
        m for m in ("image", "dna", "text") if m != disabled
    )


def _dna_to_text_species_top1(model: CLIBDModel, table: pd.DataFrame) -> float:
    """Species accuracy of val barcodes against the taxonomy text of train keys (plain matmul)."""
    model.eval()
    with torch.no_grad():
        enc = model.dna_tokenizer(table["dna_barcode"].tolist())
        dna = model.encode_dna(torch.from_numpy(enc.ids).long(), torch.from_numpy(enc.attention_mask).long())
        strings = taxonomy_text(table, "{order} {family} {genus} {species}", "not_classified").tolist()
        tokens = model.text_tokenizer(strings, padding=True, return_tensors="pt")
        text = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
    is_val, is_key = (table["split"] == "val").to_numpy(), (table["split"] == "train").to_numpy()
    species = table["species"].to_numpy()
    nearest = (dna[is_val] @ text[is_key].T).argmax(dim=1).numpy()
    return float((species[is_key][nearest] == species[is_val]).mean())


def test_training_learns_to_align_barcodes_with_taxonomy_text(data, tmp_path) -> None:
    cfg = tiny_config(data, "model.image.enabled=false", "train.epochs=4", "train.lr=3e-3",
                      "train.eval_every_epochs=2", "train.trackers=[tensorboard]", "eval.modalities=[dna,text]",
                      "train.val_retrieval=true", "train.best_metric=dna->text/macro/species/top1/seen")  # fmt: skip
    out = tmp_path / "run"
    result = train(cfg, out)
    losses = [loss for _, loss in result.losses]
    # log(16) = 2.77 at chance; ~0.98 is the floor with 2-3 same-species specimens per batch.
    assert np.mean(losses[:2]) > 2.5 and np.mean(losses[-2:]) < 1.5, losses
    table = pd.read_csv(data["csv"], dtype="string")
    torch.manual_seed(cfg.train.seed)
    untrained = _dna_to_text_species_top1(CLIBDModel(cfg.model), table)
    trained = _dna_to_text_species_top1(CLIBDModel.from_pretrained(out / "model"), table)
    assert untrained < 0.45 and trained >= 0.9, (untrained, trained)  # 6 species: chance is 1/6
    assert list(out.rglob("events.out.tfevents.*")), "no TensorBoard event file"
    # The best checkpoint is chosen by the retrieval metric of the val split.
    best = json.loads((out / "checkpoints" / "best" / "trainer_state.json").read_text())
    assert best["best"] == result.best and result.best >= 0.9
    val = json.loads((out / "val-retrieval" / "results.json").read_text())
    # val-retrieval/ holds the last validation, which need not be the best one.
    assert val["dna->text"]["seen"]["macro"]["species"]["top1"] <= result.best


def test_unwritable_output_fails_at_start(data, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match="a_file/out is not writable"):
        train(tiny_config(data), blocker / "out")


def test_resume_latest_without_checkpoint_is_refused(data, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        train(tiny_config(data), tmp_path / "fresh", resume="latest")


def test_no_weight_decay_on_norms_biases_and_logit_scale() -> None:
    model = torch.nn.Module()
    model.proj = torch.nn.Linear(4, 4)
    model.norm = torch.nn.LayerNorm(4)
    model.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
    model.frozen = torch.nn.Linear(4, 4).requires_grad_(False)
    decay, no_decay = param_groups(model, 0.1)
    ids = lambda params: [id(p) for p in params]  # noqa: E731
    assert ids(decay["params"]) == ids([model.proj.weight]) and decay["weight_decay"] == 0.1
    assert ids(no_decay["params"]) == ids([model.logit_scale, model.proj.bias, model.norm.weight, model.norm.bias])
    assert no_decay["weight_decay"] == 0.0


def test_lr_scales_with_global_batch() -> None:
    paper = TrainConfig(lr=5e-5, batch_size=500, lr_reference_batch=500)
    assert scaled_lr(paper, num_processes=4) == pytest.approx(2e-4)
    assert scaled_lr(TrainConfig(lr=5e-5, batch_size=250, grad_accum=2, lr_reference_batch=500), 1) == pytest.approx(
        5e-5
    )
    assert scaled_lr(TrainConfig(lr=1e-3, lr_reference_batch=0), 8) == 1e-3


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_schedule_warms_up_then_decays(schedule: str) -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = build_scheduler(optimizer, TrainConfig(schedule=schedule, warmup_fraction=0.1), total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    peak = int(np.argmax(lrs))
    assert 9 <= peak <= 11 and lrs[peak] == pytest.approx(1.0, rel=1e-3)
    assert lrs[0] < 0.1 and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))


# Ranks draw different dropout masks than one process does; without dropout the runs must agree.
NO_DROPOUT_TRAIN = """import sys, torch
torch.nn.Dropout.forward = lambda self, x: x
from clibd.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_equals_one(data, tmp_path, monkeypatch) -> None:
    """`accelerate launch --multi_gpu --num_processes 2` on a CPU machine (torchrun + gloo), 8 rows
    per process, logs the losses of one process training on the same 16 rows per step."""
    overrides = ("train.max_steps=3", "train.checkpoint_every_steps=2", "model.text.enabled=false")
    config = tmp_path / "config.yaml"
    save_config(tiny_config(data, "train.batch_size=8", *overrides), config)
    script = tmp_path / "train_no_dropout.py"
    script.write_text(NO_DROPOUT_TRAIN)
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(script), "--config", str(config), "--out", str(out), "--no-eval"]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, env=ONE_THREAD_ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "on 2 process(es)" in run.stdout and "global batch 16" in run.stdout
    assert sorted(p.name for p in (out / "checkpoints" / "last").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    CLIBDModel.from_pretrained(out / "model")

    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)
    train(tiny_config(data, "train.batch_size=16", *overrides), tmp_path / "one")
    two, one = logged(out), logged(tmp_path / "one")
    assert sorted(two) == sorted(one) == [1, 2, 3]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4), step


def test_train_command_exits_143_when_sigterm_stopped_it(monkeypatch, tmp_path) -> None:
    import argparse

    from clibd.commands import train as command
    from clibd.train.loop import TrainResult

    stopped = TrainResult(tmp_path, None, 3, [(3, 1.0)], None, 0, True, 1.0, 1.0)
    monkeypatch.setattr(training, "train", lambda cfg, out, resume=None: stopped)
    args = argparse.Namespace(
        config=None, out=str(tmp_path), resume=None, overwrite=False, no_eval=False, print_config=False, overrides=[]
    )
    assert command.run(args) == command.SIGTERM_EXIT == 143


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process: let a test change it, then undo."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


@pytest.mark.parametrize("extra", [["train.mixed_precision=bf16"], ["train.grad_accum=2", "train.schedule=cosine"]])
def test_bf16_and_gradient_accumulation_train(data, tmp_path, fresh_accelerate_state, extra) -> None:
    out = tmp_path / "run"
    result = train(tiny_config(data, "train.max_steps=3", *extra), out)
    assert result.steps == 3 and np.isfinite([loss for _, loss in result.losses]).all()
    saved = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
    # 72 rows / 16 = 4 batches; with 2 micro-batches per step, step 3 ends at batch 2 of epoch 1.
    assert (saved["epoch"], saved["batch_in_epoch"]) == ((0, 3) if "train.grad_accum=2" not in extra else (1, 2))


def test_reshuffles_every_epoch_reproducibly(data, tmp_path, monkeypatch) -> None:
    seen: list[list[int]] = []
    real_forward = CLIBDModel.forward

    def forward(self, batch):
        if self.training:
            seen.append(batch["index"].tolist())
        return real_forward(self, batch)

    monkeypatch.setattr(CLIBDModel, "forward", forward)
    orders = []
    for run in ("a", "b"):
        seen.clear()
        train(tiny_config(data, "model.text.enabled=false"), tmp_path / run)
        orders.append([sum(seen[:4], []), sum(seen[4:], [])])  # 4 batches of 16 per epoch
    (first, second), (again_first, again_second) = orders
    assert first != second and sorted(first) != first  # shuffled, and differently each epoch
    assert (first, second) == (again_first, again_second)  # the same seed gives the same orders


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    "final_model,best_after_epoch,best_epoch,holds",
    [
        ("best", 0, 1, "best"),  # epoch 1 validates best: OUT/model holds its weights, not the last
        ("best", 1, 2, "best"),  # epoch 1 does not count: the only best is the last epoch's
        ("best", 2, None, "last"),  # no epoch counts: no best checkpoint, the last weights (and a line)
        ("last", 0, 1, "last"),
    ],
)
def test_final_model_and_best_after_epoch(
    data, tmp_path, monkeypatch, capsys, final_model, best_after_epoch, best_epoch, holds
):
    scripted = iter([1.0, 2.0])  # val_loss of epoch 1, then a worse one at epoch 2
    monkeypatch.setattr(Validator, "__call__", lambda self: {"val_loss": next(scripted)})
    out = tmp_path / "run"
    result = train(
        tiny_config(data, f"train.final_model={final_model}", f"train.best_after_epoch={best_after_epoch}"), out
    )
    best = out / "checkpoints" / "best"
    if best_epoch is None:
        assert not best.exists() and result.best is None
        assert "no best checkpoint was taken" in capsys.readouterr().out
    else:
        assert json.loads((best / "trainer_state.json").read_text())["epoch"] == best_epoch
    assert result.final_model == holds
    source = best if holds == "best" else out / "checkpoints" / "last"
    assert _same_weights(out / "model", source / "model")
    assert _same_weights(out / "model", out / "checkpoints" / "last" / "model") == (holds == "last" or best_epoch == 2)


def test_a_fresh_run_drops_an_earlier_runs_best(data, tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    (out / "checkpoints" / "best" / "model").mkdir(parents=True)
    (out / "checkpoints" / "best" / "trainer_state.json").write_text("{}")
    result = train(tiny_config(data, "train.max_steps=1", "train.best_after_epoch=5"), out)
    assert result.final_model == "last" and not (out / "checkpoints" / "best").exists()


def test_gradient_clipping_norm_trackers_and_saved_normalisation(data, tmp_path, monkeypatch) -> None:
    """train.grad_clip_norm reaches accelerate's clip_grad_norm_ (and the gradients are clipped
    to it); the trackers get the flat hyperparameters; config.json keeps the image mean/std."""
    seen: list[tuple[float, float, float]] = []
    real_clip = Accelerator.clip_grad_norm_

    def clip(self, parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        norm = real_clip(self, parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
        seen.append((max_norm, norm.item(), after.item()))
        return norm

    hparams: list[dict] = []
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", clip)
    monkeypatch.setattr(Accelerator, "init_trackers", lambda self, name, config=None: hparams.append(config))
    mean, std = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    cfg = tiny_config(data, "train.max_steps=2", "train.grad_clip_norm=0.01", f"data.mean={mean}", f"data.std={std}")
    train(cfg, tmp_path / "run")
    assert [m for m, _, _ in seen] == [0.01, 0.01]
    for _, norm, after in seen:
        assert norm > 0.01 and after == pytest.approx(0.01, rel=1e-3)
    assert hparams[0]["train.grad_clip_norm"] == 0.01 and hparams[0]["train.lr"] == 1e-3
    assert hparams[0]["data.mean"] == str(mean) and all(
        isinstance(v, (int, float, str, bool)) for v in hparams[0].values()
    )
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["image_normalization"] == {"mean": mean, "std": std}
    seen.clear()
    train(tiny_config(data, "train.max_steps=1"), tmp_path / "unclipped")
    assert seen[0][0] == math.inf and seen[0][1] == pytest.approx(seen[0][2], rel=1e-6)  # measured, left as is


def test_mean_top1_averages_micro_and_macro_top1_of_every_pair_role_and_rank() -> None:
    metrics = {
        "dna->dna/micro/species/top1/seen": 0.5, "dna->dna/micro/species/top1/unseen": 0.25,
        "image->dna/micro/genus/top1/seen": 1.0, "image->dna/micro/genus/top1/harmonic_mean": 0.9,
        "dna->dna/macro/species/top1/seen": 0.0, "dna->dna/micro/species/top3/seen": 0.0,
        "image_dna_mean->all/macro/order/top1/unseen": 0.75,
    }  # fmt: skip
    results: dict = {}
    for key, value in metrics.items():
        pair, avg, rank, top, role = key.split("/")
        results.setdefault(pair, {}).setdefault(role, {}).setdefault(avg, {}).setdefault(rank, {})[top] = value
    assert flat_metrics(results)[MEAN_TOP1] == pytest.approx((0.5 + 0.25 + 1.0 + 0.0 + 0.75) / 5)
    assert math.isnan(flat_metrics({})[MEAN_TOP1])


@pytest.mark.slow
def test_validation_retrieval_builds_and_compiles_one_encoder_per_run(data, tmp_path, monkeypatch) -> None:
    compiled: list[str] = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn.__name__) or fn)  # count, do not compile
    built: list = []
    real_encoder = clibd.embed.datasets.InferenceEncoder
    monkeypatch.setattr(
        clibd.embed.datasets, "InferenceEncoder", lambda *a, **k: built.append(real_encoder(*a, **k)) or built[-1]
    )
    reads: list = []
    real_read = clibd.train.build.read_specimens
    monkeypatch.setattr(clibd.train.build, "read_specimens", lambda *a: reads.append(a) or real_read(*a))
    monkeypatch.setattr(clibd.eval.evaluator, "read_specimens", lambda *a: reads.append(a) or real_read(*a))
    cfg = tiny_config(data, "train.val_retrieval=true", "train.best_metric=mean_top1", "eval.compile=true",
                      "model.text.enabled=false", "eval.modalities=[image,dna]")  # fmt: skip
    result = train(cfg, tmp_path / "run")
    assert len(built) == 1 and sorted(compiled) == ["encode_dna", "encode_image"]  # 2 validations, 1 compile each
    assert len(reads) == 1  # the specimen table: read once for training and every validation
    assert result.best is not None and 0.0 <= result.best <= 1.0
