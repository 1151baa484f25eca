"""Smoke test of the benchmark runner: the cheap benchmarks run and results.json has every field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data_paths import BOLD_4K

REPO = Path(__file__).resolve().parents[1]
FIELDS = {"benchmark", "workload", "ours", "baseline", "unit", "ratio", "goal", "met", "note"}


@pytest.mark.skipif(
    not BOLD_4K.is_file(), reason=f"the tokenisation benchmark reads real barcodes from {BOLD_4K}, absent"
)
def test_quick_run_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--only", "tokenization", "metrics", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1 = a goal missed, still a complete run
    results = json.loads(out.read_text())
    assert [r["benchmark"] for r in results] == [
        "DNA tokenisation k=4",
        "DNA tokenisation k=5",
        "DNA tokenisation k=8",
        "top-k metrics",
    ]
    for r in results:
        assert set(r) == FIELDS
        assert r["ours"] > 0 and r["baseline"] > 0
        assert r["ratio"] == pytest.approx(r["ours"] / r["baseline"], rel=1e-9)
        assert r["met"] == (r["ratio"] >= r["goal"])
    assert "top-k metrics" in proc.stdout and "DNA tokenisation k=5" in proc.stdout
    assert (proc.returncode == 0) == all(r["met"] for r in results)
