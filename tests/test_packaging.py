"""pyproject.toml and environment.yml must name the same pinned packages."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    expected = _pins(project["dependencies"]) | _pins(project["optional-dependencies"]["gpu"])
    assert _pins(pip_section) == expected


def test_faiss_extras_are_exclusive() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    base = " ".join(project["dependencies"])
    assert "faiss" not in base, "faiss in the base set would install beside faiss-gpu"
    assert [d.split("==")[0] for d in extras["cpu"]] == ["faiss-cpu"]
    assert [d.split("==")[0] for d in extras["gpu"]] == ["faiss-gpu"]


def test_console_command_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["clibd"] == "clibd.cli:main"
