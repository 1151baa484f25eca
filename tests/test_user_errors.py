"""A user's mistake ends in one line naming the thing and the problem, and an exit status, never
a Python traceback (``clibd.cli``): the CLI, ``train.py`` and ``eval.py`` alike; ``--debug``
shows the traceback. Each case of issue 22 is driven here with its exact message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clibd.atomic import output_lock
from clibd.cli import main
from tests.data_paths import BOLD_4K, needs_shared_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    from tests.helpers.real_table import real_library

    return real_library(tmp_path_factory.mktemp("errors"))


@pytest.fixture
def fasta(tmp_path) -> Path:
    import pandas as pd

    bold = pd.read_csv(BOLD_4K, sep="\t", dtype=str).iloc[:3]
    path = tmp_path / "new.fasta"
    path.write_text("".join(f">{p}\n{s}\n" for p, s in zip(bold["processid"], bold["nucleotides"])))
    return path


def _fails(capsys, argv: list[str], code: int, message: str) -> str:
    """``clibd argv`` returns ``code`` and prints ``message`` in one line on stderr, no traceback."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and len([line for line in err.splitlines() if message in line]) == 1
    return err


def _classify(library, *args: str) -> list[str]:
    checkpoint, index = library
    return ["classify", "--checkpoint", str(checkpoint), "--index", str(index), *args]


# ---- configs and the command line ---------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=-1", "clibd train: train.batch_size must be at least 1, got -1"),
        ("eval.batch_size=0", "clibd train: eval.batch_size must be at least 1, got 0"),
        ("eval.ks=[1,0]", "clibd train: eval.ks must all be at least 1, got [1, 0]"),
        ("train.no_such_key=1", "clibd train: command line: unknown config key 'train.no_such_key'"),
    ],
)
def test_a_bad_config_value_is_one_line_naming_the_key(override, message, tmp_path, capsys) -> None:
    _fails(capsys, ["train", "--out", str(tmp_path / "run"), override], 2, message)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_yaml_that_would_run_code_is_refused_in_one_line(tmp_path, capsys) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text('!!python/object/apply:os.system ["touch pwned"]\n')
    _fails(capsys, ["train", "--config", str(evil)], 2, f"clibd train: {evil}: not a readable YAML config")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_negative_batch_size_or_k_is_refused_by_the_parser(library, fasta, capsys) -> None:
    for option, value in (("--batch-size", "-1"), ("--k", "0"), ("--chunk", "x")):
        with pytest.raises(SystemExit) as exit_:
            main(_classify(library, "--dna", str(fasta), option, value))
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {option}: " in err and "Traceback" not in err


# ---- out folders and files ------------------------------------------------------------------


@needs_shared_data
def test_out_naming_the_wrong_kind_of_thing_is_refused(library, fasta, tmp_path, capsys) -> None:
    checkpoint, _ = library
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    a_folder = tmp_path / "afolder"
    a_folder.mkdir()
    build = ["index", "build", "--checkpoint", str(checkpoint), "--modality", "dna", "--out"]
    _fails(
        capsys, [*build, str(a_file)], 1, f"clibd index: --out {a_file} is a file; clibd index build writes a folder"
    )
    _fails(capsys, _classify(library, "--dna", str(fasta), "--out", str(a_folder)), 1,
           f"clibd classify: --out {a_folder} is a folder; clibd classify writes a file")  # fmt: skip
    _fails(capsys, ["train", "--out", str(a_file)], 1, f"clibd train: --out {a_file} is a file; a training run writes")
    _fails(capsys, ["eval", "--checkpoint", str(checkpoint), "--out", str(a_file)], 1,
           f"clibd eval: --out {a_file} is a file; clibd eval writes a folder")  # fmt: skip
    _fails(capsys, _classify(library, "--dna", str(fasta), "--out", str(a_file)), 1,
           f"clibd classify: --out {a_file} exists and is not an earlier output of clibd classify")  # fmt: skip
    embed = ["embed", "--checkpoint", str(checkpoint), "--dna", str(fasta), "--out"]
    not_ours = tmp_path / "notes.parquet"
    not_ours.write_text("a user's file")
    _fails(capsys, [*embed, str(not_ours)], 1, f"--out {not_ours} exists and is not an earlier output of clibd embed")
    assert a_file.read_text() == "mine" and not_ours.read_text() == "a user's file"  # untouched


@needs_shared_data
def test_a_second_writer_to_one_out_fails_at_once(library, fasta, tmp_path, capsys) -> None:
    out = tmp_path / "rows.csv"
    with output_lock(out):
        _fails(capsys, _classify(library, "--dna", str(fasta), "--out", str(out)), 1,
               f"clibd classify: {out} is being written by process")  # fmt: skip
    assert not out.exists()
    assert main(_classify(library, "--dna", str(fasta), "--out", str(out))) == 0  # free again: it runs
    assert main(_classify(library, "--dna", str(fasta), "--out", str(out), "--k", "2")) == 0  # over its own output


def test_train_refuses_a_finished_run_unless_told_to_resume_or_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "config.yaml").write_text("name: old\n")
    (out / "eval-test").mkdir()
    _fails(capsys, ["train", "--out", str(out)], 1,
           f"clibd train: --out {out} holds an earlier run (finished: {out / 'model'} holds its trained model): "
           "pass --resume latest to continue it, or --overwrite to start afresh over it")  # fmt: skip
    _fails(capsys, ["train", "--out", str(out), "--resume", "latest", "--overwrite"], 1,
           "--resume continues the run in --out and --overwrite starts afresh over it: give one")  # fmt: skip
    _fails(capsys, ["train", "--out", str(out), "--resume", "latest"], 1,
           f"clibd train: --resume latest: no complete checkpoint under {out / 'checkpoints'}")  # fmt: skip
    assert (out / "model").is_dir() and (out / "eval-test").is_dir()  # nothing was removed
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("...")
    _fails(capsys, ["train", "--out", str(mine), "--overwrite"], 1,
           f"--out {mine} exists and is not a clibd training run (it holds thesis.tex)")  # fmt: skip


def test_overwrite_removes_exactly_the_earlier_runs_outputs(tmp_path) -> None:
    from clibd.train.out_dir import prepare_out_dir

    out = tmp_path / "run"
    for folder in ("model", "checkpoints/last", "eval-test", "clibd"):
        (out / folder).mkdir(parents=True)
    (out / "train_log.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("a user's notes")
    prepare_out_dir(out, None, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ---- inputs, weights and libraries ----------------------------------------------------------


@needs_shared_data
def test_missing_or_damaged_model_and_library_are_one_line(library, fasta, tmp_path, capsys) -> None:
    checkpoint, index = library
    dna = ["--dna", str(fasta)]
    missing = tmp_path / "nothing"
    classify = ["classify", "--index", str(index), *dna, "--checkpoint"]
    _fails(capsys, [*classify, str(missing)], 1, f"clibd classify: checkpoint folder not found: {missing}")
    model = Path(shutil.copytree(checkpoint, tmp_path / "model"))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    _fails(
        capsys,
        [*classify, str(model)],
        1,
        f"clibd classify: {weights}: cannot be read: it is not the file the saved model's manifest.json lists",
    )
    (model / "manifest.json").unlink()  # saved by an older clibd: the loader's own check speaks
    with pytest.warns(UserWarning, match="no manifest.json"):
        _fails(capsys, [*classify, str(model)], 1, f"clibd classify: {weights}: cannot be read (")
    (model / "config.json").write_text("{not json")
    _fails(capsys, [*classify, str(model)], 1, f"clibd classify: {model / 'config.json'}: not a readable config.json")
    base = ["classify", "--checkpoint", str(checkpoint), *dna, "--index"]
    _fails(capsys, [*base, str(missing)], 1, f"clibd classify: {missing} is not a saved ReferenceIndex: missing")
    mixed = Path(shutil.copytree(index, tmp_path / "index"))
    meta = json.loads((mixed / "meta.json").read_text())
    meta["metadata"]["thresholds"]["dna"]["threshold"] = 0.0  # another write's meta.json
    (mixed / "meta.json").write_text(json.dumps(meta))
    _fails(
        capsys,
        [*base, str(mixed)],
        1,
        f"clibd classify: {mixed / 'meta.json'}: cannot be read: it is not the file the reference index's",
    )


@needs_shared_data
def test_an_index_of_another_checkpoint_is_one_line(library, fasta, tmp_path, capsys) -> None:
    from tests.helpers.real_table import real_run

    other = real_run(tmp_path, seed=1)
    _fails(capsys, _classify((other, library[1]), "--dna", str(fasta)), 1, "rebuild the index with this checkpoint")


# ---- the real entry points, as a user runs them ---------------------------------------------


def _script(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_train_py_and_eval_py_print_one_line_and_debug_shows_the_traceback(tmp_path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/new:os.system [ls]\n")
    done = _script(str(REPO / "train.py"), "--config", str(evil), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"clibd train: {evil}: not a readable YAML config " + (
        "(could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/new:os.system')"
    )
    done = _script(str(REPO / "eval.py"), "--checkpoint", str(tmp_path / "none"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith(f"clibd eval: no --config given and no config.yaml in {tmp_path / 'none'}")
    debug = _script(str(REPO / "eval.py"), "--checkpoint", str(tmp_path / "none"), "--debug", cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "ConfigError: no --config given" in debug.stderr


def test_warnings_are_one_line() -> None:
    from clibd.cli import warning_line

    assert (
        warning_line("m: no manifest.json", UserWarning, "/x/clibd_model.py", 200) == "warning: m: no manifest.json\n"
    )


def test_debug_lets_the_exception_through(tmp_path) -> None:
    from clibd.config import ConfigError

    with pytest.raises(ConfigError, match="train.batch_size must be at least 1"):
        main(["train", "--out", str(tmp_path), "train.batch_size=0", "--debug"])
