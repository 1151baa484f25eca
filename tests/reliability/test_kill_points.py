"""SIGKILL at random points of a training run, again and again on the same output folder:
in a step, in the middle of writing a checkpoint file, between fsyncs, between the renames
that swap a checkpoint in, while the previous one is deleted, or at a random moment. After
every kill the latest checkpoint is complete and loadable and never behind the one the run
resumed from; ``resume="latest"`` then continues, and the losses of the finished run equal
an uninterrupted run's.

Each run is a forked child of the test process (so a kill costs no Python start-up) that
SIGKILLs itself from inside the call named by its kill point, or is killed by the test
after a random delay. The seed is random per session and printed on failure; set
``CLIBD_FAULT_SEED`` to replay one. One round (5 hooked kills and up to 2 timed ones) runs in
the ordinary suite; the soak group (``make soak``) runs four more: 20 hooked SIGKILLs and up
to 8 timed ones."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

import clibd.train.loop as training
from clibd.models.clibd_model import CLIBDModel
from clibd.train.checkpoint import STATE_FILE, CheckpointError, resolve_checkpoint
from clibd.train.loss import ContrastiveLoss
from tests.helpers.tiny_run import logged, tiny_config

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

# Calls made while writing checkpoints (torch.save: optimizer, scheduler, RNG states; fsync:
# every file; rename: the swap; unlink: deleting the previous copy), and training steps.
# The range of n is about two checkpoints' worth of calls (measured: per checkpoint ~16
# fsyncs, 3 torch.saves, 2-3 renames, ~4 unlinks).
HOOKS = {"step": (2, 5), "torch.save": (1, 6), "fsync": (1, 32), "rename": (1, 5), "unlink": (1, 8), "timer": (0, 0)}
EPOCH_STEPS = ("train.epochs=4",)  # 4 x 4 steps of 16 specimens: room for every hook to fire


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(hook: str, n: int) -> None:
    """In the child: SIGKILL this process at the n-th call of ``hook``."""
    calls = {"n": 0}

    def due() -> bool:
        calls["n"] += 1
        return calls["n"] == n

    if hook == "step":
        real_forward = ContrastiveLoss.forward

        def forward(self, *args, **kwargs):
            if torch.is_grad_enabled() and due():
                _kill_self()
            return real_forward(self, *args, **kwargs)

        ContrastiveLoss.forward = forward
    elif hook == "torch.save":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if due():  # half the file reaches the disk, then the process dies
                real_save(obj, f, *args, **kwargs)
                Path(f).write_bytes(Path(f).read_bytes()[: Path(f).stat().st_size // 2])
                _kill_self()
            return real_save(obj, f, *args, **kwargs)

        torch.save = save
    elif hook in ("fsync", "rename", "unlink"):
        real = getattr(os, hook)

        def call(*args, **kwargs):
            if due():
                _kill_self()
            return real(*args, **kwargs)

        setattr(os, hook, call)


def _child(cfg, out: Path, resume: Optional[str], hook: str, n: int, error_file: Path) -> None:
    torch.set_num_threads(1)
    try:
        _arm(hook, n)
        training.train(cfg, out, resume=resume)
    except BaseException:
        error_file.write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)


def _latest_step(out: Path) -> Optional[int]:
    try:
        latest = resolve_checkpoint(out, "latest")
    except CheckpointError:
        return None
    CLIBDModel.from_pretrained(latest / "model")  # loadable
    return json.loads((latest / STATE_FILE).read_text())["step"]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[int, float]:
    out = tmp_path_factory.mktemp("reference") / "run"
    training.train(tiny_config(data, *EPOCH_STEPS, "train.checkpoint_every_steps=0"), out)
    return logged(out)


ROUNDS = [0] + [pytest.param(n, marks=pytest.mark.soak) for n in (1, 2, 3, 4)]


@pytest.mark.parametrize("round_", ROUNDS)
def test_sigkill_at_random_points_always_leaves_a_loadable_latest_and_resume_matches(
    data, reference, tmp_path, round_: int
) -> None:
    seed = int(os.environ.get("CLIBD_FAULT_SEED", np.random.SeedSequence().entropy % 2**32)) + round_
    rng = np.random.default_rng(seed)
    cfg = tiny_config(data, *EPOCH_STEPS, "train.checkpoint_every_steps=1")
    out = tmp_path / "run"
    # A kill in step >= 2 first (so a checkpoint exists), the other hooks in a random order,
    # then two kills at random moments (the run may finish first on a fast machine).
    draw = {h: int(rng.integers(lo, hi + 1)) for h, (lo, hi) in HOOKS.items()}
    others = [h for h in HOOKS if h not in ("step", "timer")]
    plan = [("step", draw["step"])] + [(others[i], draw[others[i]]) for i in rng.permutation(len(others))]
    plan += [("timer", 0), ("timer", 0)]
    context = multiprocessing.get_context("fork")
    history = []
    latest = None
    for hook, n in plan:
        error_file = tmp_path / "child_error.txt"
        resume = "latest" if latest is not None else None
        child = context.Process(target=_child, args=(cfg, out, resume, hook, n, error_file))
        child.start()
        if hook == "timer":
            deadline = time.monotonic() + 120
            while latest is None and not (out / "checkpoints" / "last").is_dir() and child.is_alive():
                assert time.monotonic() < deadline, f"seed {seed}: no first checkpoint"
                time.sleep(0.01)
            time.sleep(float(rng.uniform(0, 1.0)))
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
        child.join(120)
        assert child.exitcode is not None, f"seed {seed}: {hook}#{n} child hung"
        assert child.exitcode in (0, -signal.SIGKILL), f"seed {seed}: {hook}#{n}: " + (
            error_file.read_text() if error_file.exists() else f"exit {child.exitcode}"
        )
        step = _latest_step(out)
        history.append((hook, n, child.exitcode, step))
        assert step is not None, f"seed {seed}: no loadable checkpoint after {history}"
        assert latest is None or step >= latest, f"seed {seed}: progress lost: {history}"
        latest = step
        if child.exitcode == 0:
            break
    hooked = [code for hook, _, code, _ in history if hook != "timer"]
    assert hooked == [-signal.SIGKILL] * (len(plan) - 2), f"seed {seed}: a kill point was never reached: {history}"
    if not (out / "model").is_dir():  # also after a kill between the last checkpoint and the model
        training.train(cfg, out, resume="latest")
    assert (out / "model" / "model.safetensors").is_file()
    resumed = logged(out)
    assert sorted(resumed) == sorted(reference) == list(range(1, 4 * 4 + 1))
    for step, loss in resumed.items():
        assert loss == pytest.approx(reference[step], rel=1e-5, abs=1e-6), f"seed {seed}, step {step}, kills {history}"
    kills = sum(code == -signal.SIGKILL for _, _, code, _ in history)
    print(f"seed {seed}: {kills} SIGKILLs, zero corrupt checkpoints; (hook, n, exit, latest step) {history}")


def test_resume_after_a_kill_mid_log_line_drops_the_torn_line(data, run_copy) -> None:
    """A kill (or a full disk) in the middle of appending to train_log.jsonl leaves half a line."""
    log = run_copy / "train_log.jsonl"
    complete = log.read_text()
    log.write_text(complete + '{"step": 9, "epoch": 2, "lo')
    training.train(tiny_config(data, "train.checkpoint_every_steps=2"), run_copy, resume="latest")
    assert log.read_text() == complete
