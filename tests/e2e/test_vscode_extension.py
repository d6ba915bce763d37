"""The VS Code extension builds from a clean copy (`npm ci`, `npm run compile`) and packages to a
.vsix holding the compiled extension, its manifest and its runtime dependencies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

NPM = shutil.which("npm")
SOURCE = REPO / "editors" / "vscode"
pytestmark = pytest.mark.skipif(
    NPM is None and not os.environ.get("CI"),
    reason="npm is not installed (CI has Node.js 20 and fails without it)",
)


def test_extension_builds_and_packages(tmp_path: Path):
    assert NPM, "npm must be installed in CI"
    copy = tmp_path / "vscode"
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("node_modules", "out", "*.vsix"))
    for step in (["ci", "--no-audit", "--no-fund"], ["run", "compile"], ["run", "package"]):
        done = subprocess.run([NPM, *step], cwd=copy, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm {' '.join(step)}:\n{done.stdout}\n{done.stderr}"
    with zipfile.ZipFile(copy / "codeagent-lsp.vsix") as vsix:
        names = set(vsix.namelist())
        manifest = json.loads(vsix.read("extension/package.json"))
        compiled = vsix.read("extension/out/extension.js").decode()
    assert "extension/node_modules/vscode-languageclient/lib/node/main.js" in names
    assert not any(name.startswith("extension/src/") for name in names)
    assert manifest["main"] == "./out/extension.js"
    assert "registerProposedFeatures" in compiled and "codeagent/stats" in compiled
