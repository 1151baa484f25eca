"""A reference library is written whole or not at all, and never accepted mixed.

``clibd index build --out LIB`` over library A (model A) writing library B (model B) is killed
(SIGKILL) between every pair of its file writes: after each file written, fsynced, renamed or
removed. After every kill, LIB is library A as it was, or library B whole, or it is refused
naming why; a library mixing files of A and B is never accepted, whichever model loads it.
The same for ``ReferenceIndex.save`` straight over A's folder (the Python API, no temporary
folder): its manifest goes first and comes back last, so a cut-short save is refused. A second
writer to one ``--out`` fails at once; an ``--out`` holding something else is refused."""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import signal
import traceback
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

from clibd.atomic import OutputError, output_lock, previous_copy, temporary_sibling
from clibd.cli import main
from clibd.index.faiss_index import IndexMismatchError, ReferenceIndex
from tests.data_paths import needs_shared_data

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600), needs_shared_data]

# Calls that write, sync, rename or remove a file: a kill after each is a kill between two writes.
EVENTS = (
    (os, "fsync"),
    (os, "replace"),
    (os, "rename"),
    (os, "unlink"),
    (shutil, "rmtree"),
    (faiss, "write_index"),
    (pd.DataFrame, "to_parquet"),
    (Path, "write_text"),
)


def _arm(kill_after: int, counter: list[int]) -> None:
    """In a child: SIGKILL this process right after the ``kill_after``-th event (0: count only)."""
    for owner, name in EVENTS:
        real = getattr(owner, name)

        def call(*args, _real=real, **kwargs):
            result = _real(*args, **kwargs)
            counter[0] += 1
            if counter[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(owner, name, call)


def _child(action: Callable[[], int], kill_after: int, report: Path) -> None:
    torch.set_num_threads(1)  # a forked child must not wait on the parent's OpenMP team
    faiss.omp_set_num_threads(1)
    counter = [0]
    try:
        _arm(kill_after, counter)
        code = action()
        report.write_text(f"exit {code} after {counter[0]} events")
    except BaseException:
        report.write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """Checkpoints A and B (same data, other weights), library A, and B's library for reference."""
    from tests.helpers.real_table import real_run

    folder = tmp_path_factory.mktemp("libraries")
    a, b = real_run(folder / "a", seed=0), real_run(folder / "b", seed=1)
    for name, checkpoint in (("A", a), ("B", b)):
        build = ["index", "build", "--checkpoint", str(checkpoint), "--modality", "dna", "--out"]
        assert main([*build, str(folder / f"library{name}"), "eval.batch_size=8"]) == 0
    return {"A": a, "B": b, "libraryA": folder / "libraryA", "libraryB": folder / "libraryB"}


def _same(loaded: ReferenceIndex, reference: ReferenceIndex) -> bool:
    """Whether two libraries hold the same keys, taxonomy, metadata and vectors (search of every key)."""
    vectors = reference._index.reconstruct_n(0, len(reference))
    same_search = all(np.array_equal(x, y) for x, y in zip(loaded.search(vectors, 3), reference.search(vectors, 3)))
    return (
        list(loaded.ids) == list(reference.ids)
        and loaded.taxonomy.equals(reference.taxonomy)
        and loaded.metadata == reference.metadata
        and loaded.checkpoint_hash == reference.checkpoint_hash
        and same_search
    )


def _outcome(library: Path, models: dict, expected: dict[str, ReferenceIndex]) -> str:
    """``A`` / ``B`` (loads and is that library whole), ``refused: <error>``, or ``MIXED``."""
    from clibd.embed.run_dir import checkpoint_hash

    outcomes = set()
    for name in ("A", "B"):  # as either model's classify would load it
        try:
            loaded = ReferenceIndex.load(library, expected_checkpoint_hash=checkpoint_hash(models[name]))
        except (OutputError, IndexMismatchError, FileNotFoundError, ValueError) as err:
            outcomes.add(f"refused: {type(err).__name__}")
            continue
        outcomes.add(name if _same(loaded, expected[name]) else "MIXED")
    return "MIXED" if "MIXED" in outcomes else "+".join(sorted(outcomes))


def _kill_rounds(
    tmp_path: Path, models: dict, action_for: Callable[[Path], Callable[[], int]], restore: Callable[[], Path]
) -> list[tuple[int, int, str]]:
    """Kill the write after each event in turn (a first run counts them); ``(n, exit, outcome)`` each."""
    expected = {name: ReferenceIndex.load(models[f"library{name}"]) for name in ("A", "B")}
    context = multiprocessing.get_context("fork")
    history, events, n = [], None, 0
    while events is None or n <= events:
        library = restore()
        report = tmp_path / "report.txt"
        report.unlink(missing_ok=True)
        child = context.Process(target=_child, args=(action_for(library), n, report))
        child.start()
        child.join(120)
        assert child.exitcode in (0, -signal.SIGKILL), report.read_text() if report.exists() else child.exitcode
        if n == 0:  # the counting run: it finished
            assert report.read_text().startswith("exit 0"), report.read_text()
            events = int(report.read_text().split()[3])
        history.append((n, child.exitcode, _outcome(library, models, expected)))
        n += 1
    return history


def test_index_build_killed_between_every_pair_of_file_writes_never_leaves_a_mixed_library(models, tmp_path) -> None:
    library = tmp_path / "library"

    def restore() -> Path:  # library A, and nothing a killed write left beside it: every round alike
        for path in (library, temporary_sibling(library), previous_copy(library)):
            shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(models["libraryA"], library)
        return library

    def build(out: Path) -> Callable[[], int]:
        argv = ["index", "build", "--checkpoint", str(models["B"]), "--modality", "dna", "--out", str(out)]
        return functools.partial(main, [*argv, "eval.batch_size=8"])

    history = _kill_rounds(tmp_path, models, build, restore)
    kills = [h for h in history if h[1] == -signal.SIGKILL]
    print(f"index build: {len(kills)} kills between file writes, outcomes {[h[2] for h in history]}")
    assert len(kills) == len(history) - 1 >= 10  # every event of the write was a kill point
    assert not [h for h in history if h[2] == "MIXED"], history
    assert history[0][2] == "B+refused: IndexMismatchError"  # uninterrupted: B whole (refused by model A)
    # before the swap LIB is A, whole; after it B; in between (the instant of two renames) it is refused
    outcomes = [h[2] for h in kills]
    assert set(outcomes) == {"A+refused: IndexMismatchError", "B+refused: IndexMismatchError",
                             "refused: FileNotFoundError"}  # fmt: skip
    assert outcomes.count("refused: FileNotFoundError") == 1


def test_reference_index_save_over_a_library_killed_anywhere_is_refused_or_whole(models, tmp_path) -> None:
    """The Python API's save writes in place: the manifest it removes first makes a cut-short save refused."""
    library = tmp_path / "library"

    def restore() -> Path:
        shutil.rmtree(library, ignore_errors=True)
        shutil.copytree(models["libraryA"], library)
        return library

    def save_over(out: Path) -> Callable[[], int]:  # library B saved straight into A's folder
        return lambda: ReferenceIndex.load(models["libraryB"]).save(out) and 0

    history = _kill_rounds(tmp_path, models, save_over, restore)
    outcomes = [h[2] for h in history]
    print(f"ReferenceIndex.save in place: {len(history) - 1} kills, outcomes {outcomes}")
    assert not [h for h in history if h[2] == "MIXED"], history
    assert outcomes[0] == "B+refused: IndexMismatchError" and len(history) > 5
    assert "refused: OutputError" in outcomes  # the unfinished folders were refused, not half-loaded


def test_a_second_writer_fails_at_once_and_a_foreign_folder_is_refused(models, tmp_path, capsys) -> None:
    out = tmp_path / "library"
    build = ["index", "build", "--checkpoint", str(models["B"]), "--modality", "dna", "--out", str(out)]
    with output_lock(out):  # a first writer at work
        assert main([*build, "eval.batch_size=8"]) == 1
    err = capsys.readouterr().err
    assert f"clibd index: {out} is being written by process {os.getpid()}: wait for it" in err
    assert "Traceback" not in err and not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "meta.json").write_text('{"a user\'s": "file"}')
    assert main([*build[:-1], str(mine), "eval.batch_size=8"]) == 1
    err = capsys.readouterr().err
    assert f"--out {mine} exists and is not an earlier output of clibd index build (it holds meta.json)" in err
    assert (mine / "meta.json").read_text() == '{"a user\'s": "file"}'  # untouched
