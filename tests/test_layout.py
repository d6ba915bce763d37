"""The project's code rules, run as tests so that CI enforces them (`.ci/run` runs pytest only):
ruff's lint and format, and mypy over the package.

ruff's banned-API rule (TID251, configured in pyproject.toml) keeps pygls and lsprotocol inside
the LSP layer: features/, server.py, transport.py, node.py, documents.py and the tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", "codeagent_lsp", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"],  # files: pyproject's [tool.mypy]
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_layers_below_lsp_may_not_import_pygls() -> None:
    """The rule bites: a module of context/ that imports LSP types is refused."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--stdin-filename",
            "codeagent_lsp/context/probe.py",
            "-",
        ],
        input="from lsprotocol import types\n\nTYPES = types\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "TID251" in done.stdout, done.stdout
