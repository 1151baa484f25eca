"""Directories written whole or not at all: the one writer behind saved models and checkpoints.

A directory is written under a temporary sibling name, every file and folder in it fsynced,
then swapped into place: an existing target is first renamed to ``<name>.old``, the new one
renamed to ``<name>``, the parent fsynced and ``.old`` deleted. A kill at any moment leaves
either the old directory (as ``<name>`` or, for the instant between the two renames,
``<name>.old``) or the new one, never a mix; a temporary sibling left by a kill is removed by
the next write.

Single-process writers use :func:`atomic_directory`; a multi-process writer (a training
checkpoint, where every rank writes its own files) uses :func:`temporary_sibling` and
:func:`commit_directory` around its own barriers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def temporary_sibling(target: Path) -> Path:
    """The name ``target`` is written under: ``.<name>.tmp`` beside it."""
    return target.with_name(f".{target.name}.tmp")


def previous_copy(target: Path) -> Path:
    """Where the old ``target`` sits between the two renames of a commit."""
    return target.with_name(f"{target.name}.old")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Every file and folder under ``root``, and ``root`` itself, on disk."""
    for path in sorted(root.rglob("*")) + [root]:
        fsync_path(path)


def commit_directory(tmp: Path, target: Path) -> None:
    """Make the finished ``tmp`` the ``target`` directory, replacing any old one."""
    fsync_tree(tmp)
    old = previous_copy(target)
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    tmp.rename(target)
    fsync_path(target.parent)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_directory(out) as tmp:`` write into ``tmp``; on a clean exit it becomes ``out``,
    on an exception it is removed and ``out`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a writer killed mid-write
    tmp.mkdir()
    try:
        yield tmp
        commit_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
