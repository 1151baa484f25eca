"""Directories written whole or not at all (clibd.atomic): saved models and checkpoints."""

import pytest

from clibd.atomic import atomic_directory, previous_copy, temporary_sibling


def test_a_finished_write_replaces_the_old_directory(tmp_path) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with atomic_directory(target) as tmp:
        assert not (tmp / "a.txt").exists()  # a fresh folder, not the old one
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary or .old copy left


def test_a_failed_write_leaves_the_old_directory_untouched(tmp_path) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(OSError, match="disk full"):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise OSError("disk full")
    assert (target / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_leftovers_of_a_killed_writer_are_cleared_by_the_next_write(tmp_path) -> None:
    target = tmp_path / "model"
    temporary_sibling(target).mkdir()
    (temporary_sibling(target) / "stale.txt").write_text("from a killed run")
    previous_copy(target).mkdir()  # killed between the two renames: the old copy is all there is
    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
