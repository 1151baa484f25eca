"""``bench/gpu_check.py --dry-run``: the GPU check's code runs end to end at tiny sizes on the
CPU, so the script is known to work before a GPU machine is lent for minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_writes_every_check(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    run = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["device"] == "cpu (dry run)"
    checks = [row["check"] for row in report["rows"]]
    assert checks[:2] == ["train paper config bf16 eager", "train paper config bf16 compiled"]
    assert "loader: augmentation on device" in checks and "embed dna bf16 InferenceEncoder" in checks
    train = report["rows"][0]
    assert train["tflop_per_step"] > 0 and train["mfu"] is None  # no device peak on a CPU
    search = {row["check"].split()[1]: row for row in report["rows"] if row["check"].startswith("search")}
    assert search["exact"]["recall@1"] == 1.0 and search["ivf"]["recall@1"] >= 0.95
    assert "search ivf nlist=" in run.stdout  # the printed table
