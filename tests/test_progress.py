"""Progress output fit for log files: plain lines every N steps off a terminal (clibd.progress)."""

import io
import sys

from tqdm.auto import tqdm

from clibd.progress import LineProgress, progress


def test_a_log_file_gets_one_line_every_n_steps_and_the_end() -> None:
    out = io.StringIO()
    bar = LineProgress(total=25, desc="train", every=10, file=out)
    for step in range(1, 26):
        if step == 10:
            bar.set_postfix(loss="2.5000")  # as the training loop does at a logged step, before its update
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["10/25", "20/25", "25/25"]
    assert lines[0].startswith("train: 10/25 (40%) ") and lines[0].endswith("s, loss=2.5000")
    assert "\r" not in out.getvalue()


def test_iterating_counts_items_and_prints_a_tenth_at_a_time() -> None:
    out = io.StringIO()
    assert list(LineProgress(range(30), desc="embed dna", file=out)) == list(range(30))
    assert [line.split(" ")[2] for line in out.getvalue().splitlines()] == [f"{n}/30" for n in range(3, 31, 3)]


def test_a_terminal_gets_tqdm_and_a_pipe_gets_lines(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert isinstance(progress(total=3, desc="x"), LineProgress)
    assert isinstance(progress(total=3, desc="x", disable=True), tqdm)  # nothing at all, on a non-main process

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert isinstance(progress(total=3, desc="x"), tqdm)
