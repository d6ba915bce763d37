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


def _module(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m ARGS` in the checkout's root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        input=stdin,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    done = _module("ruff", *command, "--no-cache", "codeagent_lsp", "tests")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    done = _module("mypy", "--no-incremental")  # files: pyproject's [tool.mypy]
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_layers_below_lsp_may_not_import_pygls() -> None:
    """The rule bites: a module of context/ that imports LSP types is refused."""
    probe = "codeagent_lsp/context/probe.py"
    done = _module(
        "ruff", "check", "--no-cache", "--stdin-filename", probe, "-",
        stdin="from lsprotocol import types\n\nTYPES = types\n",
    )  # fmt: skip
    assert done.returncode == 1 and "TID251" in done.stdout, done.stdout
