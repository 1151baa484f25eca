"""Two "nodes" on one machine, as the SLURM script of docs/training.md launches them: one
``accelerate launch --num_machines 2 --machine_rank R`` per node on 127.0.0.1 (torchrun +
gloo on the CPU), one process each. The losses and the parameters equal one process training
on the same rows, and a run that dies after a checkpoint resumes to the same result."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clibd.config import save_config
from clibd.models.clibd_model import CLIBDModel
from clibd.train.loop import train
from tests.helpers.tiny_run import logged, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
LR, STEPS = 1e-3, 3  # tiny_config's learning rate; the steps trained
OVERRIDES = ("train.max_steps=3", "train.checkpoint_every_steps=2", "model.text.enabled=false")
# Ranks draw other dropout masks than one process does; without dropout the runs must agree.
# CLIBD_FAULT (tests/reliability/fault_train.py) makes one rank raise at a given step.
DRIVER = f"""import os, sys, torch
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
torch.nn.Dropout.forward = lambda self, x: x
from tests.reliability.fault_train import arm
from clibd.cli import main
if os.environ.get("CLIBD_FAULT"):
    arm(os.environ["CLIBD_FAULT"], Path(os.environ["CLIBD_FAULT_TIME_FILE"]))
sys.exit(main(["train", *sys.argv[1:]]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(
    tmp_path: Path, config: Path, out: Path, *extra: str, fault: str = ""
) -> list[subprocess.CompletedProcess]:
    """Both node launchers at once, as ``srun`` starts one per node; returns their runs."""
    script = tmp_path / "train_no_dropout.py"
    script.write_text(DRIVER)
    port = str(_free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLIBD_FAULT": fault, "CLIBD_FAULT_TIME_FILE": str(tmp_path / "fault")}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--multi_gpu",
                "--num_machines",
                "2",
                "--num_processes",
                "2",
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                port,
                "--mixed_precision",
                "no",
                "--dynamo_backend",
                "no",
                str(script),
                "--config",
                str(config),
                "--out",
                str(out),
                "--no-eval",
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    runs = []
    for node in nodes:
        stdout, stderr = node.communicate(timeout=400)
        runs.append(subprocess.CompletedProcess(node.args, node.returncode, stdout, stderr))
    return runs


def _assert_same_parameters(a: Path, b: Path) -> None:
    """All but a few elements equal; none further apart than AdamW can move them.

    AdamW divides each gradient by its running size, so an element whose true gradient is 0
    (e.g. attention key biases: softmax ignores a constant per query) moves by ~lr in the
    direction the all-reduce's rounding noise picks, in one process or two alike. A real
    divergence (other rows, a missing all-reduce) changes most elements."""
    left, right = CLIBDModel.from_pretrained(a).state_dict(), CLIBDModel.from_pretrained(b).state_dict()
    assert left.keys() == right.keys()
    diff = torch.cat([(left[k].float() - right[k].float()).abs().flatten() for k in left])
    off = float((diff > 1e-5).float().mean())
    assert off < 0.01, f"{off:.2%} of the parameters differ by more than 1e-5"
    assert float(diff.max()) <= 2 * LR * STEPS, f"a parameter differs by {float(diff.max()):.3g}"


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)
        train(tiny_config(data, "train.batch_size=16", *OVERRIDES), out)
    return out


def test_two_nodes_equal_one_process_and_resume_after_a_failure(data, one_process, tmp_path) -> None:
    config = tmp_path / "config.yaml"
    save_config(tiny_config(data, "train.batch_size=8", *OVERRIDES), config)  # 8 per process: global 16
    out = tmp_path / "two"
    runs = _two_nodes(tmp_path, config, out)
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-3000:] + runs[1].stderr[-3000:]
    assert "on 2 process(es)" in runs[0].stdout and "global batch 16" in runs[0].stdout
    one, two = logged(one_process), logged(out)
    assert sorted(two) == sorted(one) == [1, 2, 3]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4), step
    _assert_same_parameters(out / "model", one_process / "model")

    # Rank 1 (node 1) dies at step 3, after the step-2 checkpoint; the relaunch resumes there.
    failed = tmp_path / "failed"
    runs = _two_nodes(tmp_path, config, failed, fault="raise:1:3")
    assert all(r.returncode != 0 for r in runs) and not (failed / "model").exists()
    runs = _two_nodes(tmp_path, config, failed, "--resume", "latest")
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-3000:] + runs[1].stderr[-3000:]
    assert "resumed from" in runs[0].stdout and "at step 2" in runs[0].stdout
    assert logged(failed)[3] == pytest.approx(one[3], rel=1e-4)
    _assert_same_parameters(failed / "model", one_process / "model")
