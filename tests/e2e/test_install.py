"""A wheel built from pyproject.toml works outside the checkout: it carries the tree-sitter
queries and the model registry, keeps models in the user's data folder, indexes a folder and
completes with a model from there.

The wheel goes into a fresh virtual environment that borrows this interpreter's packages
(`--system-site-packages`), so llama-cpp-python is not rebuilt; the wheel's own copy of
codeagent_lsp wins over the checkout's editable install, which the first test checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PROJECTS, REPO

# What the wheel is built from: a copy, so no build/ or egg-info lands in the checkout.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "codeagent_lsp")
# Variables that would point the installed tool back at the checkout or this user's files.
CLEARED = ("PYTHONPATH", "XDG_DATA_HOME", "CODEAGENT_MODELS_DIR", "CODEAGENT_MODEL")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    home: Path
    work: Path

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`codeagent-lsp ARGS` of the venv, from a folder outside the checkout."""
        return self.call(str(self.venv / "bin" / "codeagent-lsp"), *args, **env)

    def call(self, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k not in CLEARED}
        environ.update(HOME=str(self.home), **env)
        return subprocess.run(
            command, cwd=self.work, env=environ, capture_output=True, text=True, timeout=300
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    source, dist, venv = root / "source", root / "dist", root / "venv"
    source.mkdir()
    for name in WHEEL_SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist)]
    subprocess.run([*build, str(source)], check=True, timeout=600)
    (wheel,) = dist.glob("codeagent_lsp-*.whl")
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    # The base interpreter's pip, run by the venv's python, installs into the venv.
    install = [str(venv / "bin" / "python"), *pip[1:], "install", "--no-deps", "--no-index"]
    subprocess.run([*install, str(wheel)], check=True, timeout=300)
    (root / "home").mkdir()
    (root / "work").mkdir()
    return Installed(wheel, venv, root / "home", root / "work")


def test_the_venv_imports_the_wheel_not_the_checkout(installed: Installed):
    out = installed.call(
        str(installed.venv / "bin" / "python"),
        "-c",
        "import codeagent_lsp; print(codeagent_lsp.__file__)",
    )
    assert out.returncode == 0, out.stderr
    imported = Path(out.stdout.strip()).resolve()
    assert imported.is_relative_to(installed.venv.resolve()), imported
    assert not imported.is_relative_to(REPO)


def test_the_wheel_carries_every_query_and_the_registry(installed: Installed):
    data = [
        *(REPO / "codeagent_lsp" / "codegraph" / "queries").rglob("*.scm"),
        REPO / "codeagent_lsp" / "engine" / "registry.toml",
    ]
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    missing = [p for p in data if p.relative_to(REPO).as_posix() not in names]
    assert len(data) > 30 and not missing


def test_models_default_to_the_users_data_folder(installed: Installed, tmp_path: Path):
    out = installed.run("model", "list")
    assert out.returncode == 0, out.stderr
    default = installed.home / ".local" / "share" / "codeagent-lsp" / "models"
    assert out.stdout.splitlines()[0] == f"models in {default}"
    assert "qwen2.5-coder-0.5b" in out.stdout  # the registry, read from the wheel
    out = installed.run("model", "list", XDG_DATA_HOME=str(tmp_path / "data"))
    assert (
        out.stdout.splitlines()[0] == f"models in {tmp_path / 'data' / 'codeagent-lsp' / 'models'}"
    )
    assert "--models-dir" in installed.run("model", "pull", "--help").stdout


def test_indexes_and_completes_outside_the_checkout(installed: Installed, tiny_model: Path):
    project = installed.work / "project"
    shutil.copytree(PROJECTS / "python", project)
    out = installed.run("index", str(project), "--db", str(installed.work / "graph.sqlite3"))
    assert out.returncode == 0, out.stderr
    # The same folder indexed by the checkout: the installed queries find the same facts.
    expected = subprocess.run(
        [
            sys.executable,
            "-m",
            "codeagent_lsp",
            "index",
            str(project),
            "--db",
            str(installed.work / "checkout.sqlite3"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert _counts(out.stdout) == _counts(expected.stdout)
    assert _counts(out.stdout)["symbols"] > 0 and " 0 skipped" in out.stdout

    out = installed.run("model", "add", str(tiny_model), "--name", "tiny")
    assert out.returncode == 0, out.stderr
    local = installed.home / ".local" / "share" / "codeagent-lsp" / "models" / "local.toml"
    assert "tiny" in local.read_text()
    out = installed.run(
        "complete", f"{project / 'app.py'}:16:11", "--model", "tiny", "--threads", "1", "--json"
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    # "tiny" resolved through local.toml in the user's data folder, with the shipped registry.
    assert result["suggestion"] and result["model"]["device"]
    assert result["record"]["promptTokens"] > 0


def _counts(summary: str) -> dict[str, int]:
    match = re.match(r"(\d+) files, (\d+) symbols, (\d+) references", summary)
    assert match, summary
    return dict(zip(("files", "symbols", "references"), map(int, match.groups()), strict=True))
