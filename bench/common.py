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
