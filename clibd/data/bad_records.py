"""Counted, reported skips: a record dropped under ``data.bad_records=skip`` is never lost silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

# How many example ids a report keeps per reason.
MAX_EXAMPLES = 5


@dataclass
class SkipReport:
    """Records read, and records skipped per reason with a few example ids."""

    read: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, ids: Iterable[object]) -> None:
        ids = [str(i) for i in ids]
        if not ids:
            return
        self.counts[reason] = self.counts.get(reason, 0) + len(ids)
        kept = self.examples.setdefault(reason, [])
        kept.extend(ids[: MAX_EXAMPLES - len(kept)])

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: "SkipReport") -> "SkipReport":
        """A new report holding both (e.g. table-level skips + decode-time skips)."""
        out = SkipReport(read=self.read + other.read)
        for report in (self, other):
            for reason, count in report.counts.items():
                out.counts[reason] = out.counts.get(reason, 0) + count
                kept = out.examples.setdefault(reason, [])
                kept.extend(report.examples.get(reason, [])[: MAX_EXAMPLES - len(kept)])
        return out

    def summary(self) -> str:
        if not self.counts:
            return f"no records skipped ({self.read} read)"
        parts = [
            f"{count} {reason} (e.g. {', '.join(self.examples.get(reason, []))})"
            for reason, count in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return f"skipped {self.skipped} of {self.read} records: " + "; ".join(parts)

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "skipped": self.skipped,
            "counts": dict(self.counts),
            "examples": dict(self.examples),
        }
