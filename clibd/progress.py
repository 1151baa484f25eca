"""Progress on stderr that suits where it goes: a live tqdm bar on a terminal, and in a log
file (a batch job, ``make demo > log``) one plain line every ``every`` steps and at the end,
instead of tqdm's carriage-return frames that turn a log into one enormous line."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO

from tqdm.auto import tqdm


class LineProgress:
    """The part of tqdm's interface clibd uses (iterate, ``update``, ``set_postfix``, ``close``),
    printing ``desc: n/total (p%) elapsed, postfix`` every ``every`` steps and at the end."""

    def __init__(
        self,
        iterable: Optional[Iterable] = None,
        total: Optional[int] = None,
        desc: str = "",
        every: Optional[int] = None,
        initial: int = 0,
        file: Optional[TextIO] = None,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else _length(iterable)
        self.desc, self.n, self.postfix = desc, initial, ""
        self.every = every or max(1, (self.total or 100) // 10)
        self.file = file or sys.stderr
        self.start = time.perf_counter()
        self._printed_at = initial

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n - self._printed_at >= self.every or (self.total is not None and self.n >= self.total):
            self._print()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if self.n != self._printed_at:
            self._print()

    def _print(self) -> None:
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        elapsed = time.perf_counter() - self.start
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {elapsed:.0f}s{tail}", file=self.file, flush=True)
        self._printed_at = self.n


def _length(iterable: Optional[Iterable]) -> Optional[int]:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress(
    iterable: Optional[Iterable] = None,
    *,
    total: Optional[int] = None,
    desc: str = "",
    every: Optional[int] = None,
    initial: int = 0,
    disable: bool = False,
    leave: bool = True,
) -> tqdm | LineProgress:
    """A tqdm bar when stderr is a terminal, else a :class:`LineProgress` (``every`` steps; default a
    tenth of ``total``). ``disable``: neither (a non-main process, or too little to show)."""
    if disable or sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, initial=initial, disable=disable, leave=leave)
    return LineProgress(iterable, total, desc, every, initial)
