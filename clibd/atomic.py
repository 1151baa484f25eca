"""Directories written whole or not at all: the one writer behind saved models and checkpoints.

A directory is written under a temporary sibling name, every file and folder in it fsynced,
then swapped into place: an existing target is first renamed to ``<name>.old``, the new one
renamed to ``<name>``, the parent fsynced and ``.old`` deleted. A kill at any moment leaves
either the old directory (as ``<name>`` or, for the instant between the two renames,
``<name>.old``) or the new one, never a mix; a temporary sibling left by a kill is removed by
the next write.

Single-process writers use :func:`atomic_directory`; a multi-process writer (a training
checkpoint, where every rank writes its own files) uses :func:`temporary_sibling` and
:func:`commit_directory` around its own barriers. A single file is written beside its target and
renamed over it (:func:`atomic_file`).

A finished multi-file output (a reference library, a saved model) ends with ``manifest.json``:
what wrote it, the checkpoint hash, and every file's size and checksums
(:func:`write_manifest`); its readers check it (:func:`verify_manifest`) and refuse a folder
whose files come from different writes, naming the file. A command's output is also locked
against a second writer and refused over anything but an earlier output of the same command
(:func:`atomic_output`, :func:`output_lock`, :func:`check_replaceable`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, Optional


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


# ---- single files ---------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_file(out) as tmp:`` write the file ``tmp``; on a clean exit it is fsynced and
    renamed to ``out`` (one rename: readers see the old file or the new one), on an exception removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)  # left by a writer killed mid-write
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- manifests: what a multi-file output holds, checked by its readers ----------------------

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
# Files up to this size are hashed whole when verified; a larger one (an ivfpq library's mapped
# vectors run to gigabytes) by its size and sample_sha256: its first and last MiB and 64 blocks
# of 64 KiB spread between them. Files of another write differ in both; a flipped bit in the
# unsampled middle of such a file is what the sampled check gives up.
FULL_CHECK_BYTES = 256 << 20
_SAMPLE_BLOCKS, _SAMPLE_BLOCK, _SAMPLE_END = 64, 64 << 10, 1 << 20


class OutputError(ValueError):
    """An output that cannot be written (busy, in the way) or read (partial, mixed); the message
    names the folder or file and what to do."""


def file_sha256(path: Path) -> str:
    return chained_sha256([path])


def chained_sha256(paths: list[Path]) -> str:
    """One sha256 over the files' bytes in order (a checkpoint's hash: config.json + weights)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def sample_sha256(path: Path) -> str:
    """sha256 of the size, the first and last MiB and ``_SAMPLE_BLOCKS`` evenly spread blocks."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    starts = [0, max(0, size - _SAMPLE_END)]
    starts += [int(i * size / (_SAMPLE_BLOCKS + 1)) for i in range(1, _SAMPLE_BLOCKS + 1)]
    with path.open("rb") as f:
        for start, length in zip(starts, [_SAMPLE_END, _SAMPLE_END] + [_SAMPLE_BLOCK] * _SAMPLE_BLOCKS):
            f.seek(start)
            digest.update(f.read(length))
    return digest.hexdigest()


def write_manifest(
    folder: Path, kind: str, files: list[str], checkpoint_hash: Optional[str] = None, name: str = MANIFEST
) -> Path:
    """``folder/manifest.json`` (or ``name``): ``kind`` (what wrote it), the checkpoint hash, and each
    file's size, sha256 and sample_sha256. Written last: a folder with a manifest was finished."""
    folder = Path(folder)
    entries = {
        name: {
            "bytes": (folder / name).stat().st_size,
            "sha256": file_sha256(folder / name),
            "sample_sha256": sample_sha256(folder / name),
        }
        for name in files
    }
    manifest = {"format": MANIFEST_FORMAT, "kind": kind, "checkpoint_hash": checkpoint_hash, "files": entries}
    with atomic_file(folder / name) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return folder / name


def read_manifest(folder: Path, name: str = MANIFEST) -> Optional[dict]:
    """The manifest of ``folder``, or None when it has none (or an unreadable one)."""
    try:
        manifest = json.loads((Path(folder) / name).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def verify_manifest(
    folder: str | os.PathLike,
    kind: str,
    what: str,
    full_check_bytes: Optional[int] = FULL_CHECK_BYTES,
    name: str = MANIFEST,
) -> dict:
    """The manifest of ``folder``, after checking that every file it lists is there with its size and
    checksum (``full_check_bytes``: hash files up to this size whole, larger ones by sample; None: all
    whole). ``what`` says what the folder is in errors (e.g. ``reference index``). Raises
    :class:`OutputError` naming the file that differs (FileNotFoundError: a listed file is missing)."""
    folder = Path(folder)
    manifest = read_manifest(folder, name)
    if manifest is None:
        raise OutputError(
            f"{folder}: no readable {name}: this {what} was not written whole (killed mid-write, or by an older "
            "clibd); write it again"
        )
    if manifest.get("kind") != kind:
        raise OutputError(f"{folder}: its {name} says it holds a {manifest.get('kind')!r}, not a {what}")
    for file, entry in manifest["files"].items():
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the {what} ({name} lists it); write it again")
        size = path.stat().st_size
        whole = full_check_bytes is None or size <= full_check_bytes
        if size != entry["bytes"] or (file_sha256(path) if whole else sample_sha256(path)) != (
            entry["sha256"] if whole else entry["sample_sha256"]
        ):
            raise OutputError(
                f"{path}: cannot be read: it is not the file the {what}'s {name} lists ({size:,} bytes, "
                f"{entry['bytes']:,} listed; checksums differ): its files come from different writes "
                "or the file was damaged; write it again"
            )
    return manifest


# ---- one writer per output, and no output over something else -------------------------------


@contextlib.contextmanager
def output_lock(target: str | os.PathLike) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` for the block; a second writer fails at once with an
    :class:`OutputError` (the lock file stays: removing it would let two writers lock two files)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputError(
                f"{target} is being written by {holder}: wait for it to finish or choose another --out"
            ) from None
        handle.truncate(0)
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_replaceable(
    target: str | os.PathLike,
    kind: str,
    command: str,
    is_earlier: Optional[Callable[[Path], bool]] = None,
    folder: bool = True,
) -> None:
    """Refuse an ``--out`` that holds something else. A folder output may replace nothing, an empty
    folder, a folder whose manifest is of ``kind`` or one ``is_earlier`` recognises; a file output
    nothing or a file ``is_earlier`` recognises as ``command``'s."""
    target = Path(target)
    if not target.exists():
        return
    if folder != target.is_dir():
        shape = "a folder" if target.is_dir() else "a file"
        raise OutputError(f"--out {target} is {shape}; {command} writes {'a folder' if folder else 'a file'}")
    if folder:
        entries = sorted(p.name for p in target.iterdir())
        manifest = read_manifest(target)
        earlier = (manifest is not None and manifest.get("kind") == kind) or (is_earlier and is_earlier(target))
        if entries and not earlier:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise OutputError(
                f"--out {target} exists and is not an earlier output of {command} (it holds {shown}); "
                "choose a new or empty folder, or remove it"
            )
    elif is_earlier is None or not is_earlier(target):
        raise OutputError(
            f"--out {target} exists and is not an earlier output of {command}; choose another file name or remove it"
        )


@contextlib.contextmanager
def atomic_output(
    target: str | os.PathLike, kind: str, command: str, is_earlier: Optional[Callable[[Path], bool]] = None
) -> Iterator[Path]:
    """A command's folder output: locked against a second writer, refused over anything but an earlier
    output of ``kind`` (:func:`check_replaceable`), written into a temporary folder that gets a manifest
    of every file (unless the writer wrote its own) and replaces ``target`` in one rename."""
    with output_lock(target):
        check_replaceable(target, kind, command, is_earlier)
        with atomic_directory(target) as tmp:
            yield tmp
            if not (tmp / MANIFEST).exists():
                files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
                write_manifest(tmp, kind, files)


@contextlib.contextmanager
def atomic_file_output(target: str | os.PathLike, command: str, is_earlier: Callable[[Path], bool]) -> Iterator[Path]:
    """A command's file output: locked against a second writer, refused over anything ``is_earlier``
    does not recognise as ``command``'s, written beside ``target`` and renamed over it at the end."""
    with output_lock(target):
        check_replaceable(target, "", command, is_earlier, folder=False)
        with atomic_file(target) as tmp:
            yield tmp
