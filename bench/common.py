"""What every benchmark returns, and how it is timed."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@dataclass
class Result:
    benchmark: str
    workload: str
    ours: float
    baseline: float
    unit: str  # unit of ours and baseline, e.g. "barcodes/s"
    ratio: float  # ours / baseline, oriented so that higher is better
    goal: Optional[float]  # the ratio the goal asks for; None = measured for information only
    note: str = ""

    @classmethod
    def timed(
        cls,
        benchmark: str,
        workload: str,
        n: int,
        ours_s: float,
        baseline_s: float,
        unit: str,
        goal: Optional[float],
        note: str = "",
    ) -> "Result":
        """Both sides timed on the same ``n`` items: throughputs in ``unit`` (items/s), ratio = speed-up."""
        return cls(benchmark, workload, n / ours_s, n / baseline_s, unit, baseline_s / ours_s, goal, note)

    @property
    def met(self) -> Optional[bool]:
        return None if self.goal is None else self.ratio >= self.goal

    def as_dict(self) -> dict:
        return asdict(self) | {"met": self.met}


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls: the least disturbed by other load on the machine."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
