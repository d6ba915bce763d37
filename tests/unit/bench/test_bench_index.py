"""`codeagent-lsp bench index`: the CodeGraph's indexing figures, against universal-ctags when
it is installed and with a clear word when it is not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codeagent_lsp.codegraph.languages import language_for
from tests.conftest import PROJECTS, REPO

CLI = [sys.executable, "-m", "codeagent_lsp", "bench", "index"]


def _universal_ctags() -> bool:
    if shutil.which("ctags") is None:
        return False
    version = subprocess.run(["ctags", "--version"], capture_output=True, text=True, check=False)
    return "Universal Ctags" in version.stdout


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, int, int]:
    """The fixture projects plus files the indexer leaves out: (root, files, lines) of what
    it indexes."""
    root = tmp_path / "projects"
    shutil.copytree(PROJECTS, root)
    indexed = [p for p in root.rglob("*") if p.is_file() and language_for(p.name)]
    lines = sum(len(p.read_bytes().splitlines()) for p in indexed)
    (root / "node_modules" / "dep").mkdir(parents=True)
    (root / "node_modules" / "dep" / "index.js").write_text("export const vendored = 1;\n")
    (root / "blob.py").write_bytes(b"x = 1\n\0\1\2binary\n")
    return root, len(indexed), lines


def _bench(root: Path, *args: str) -> tuple[dict[str, object], str]:
    done = subprocess.run(
        [*CLI, str(root), "--samples", "4", "--json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout), done.stderr


def _contents(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("ctags", "why"), [("no-such-ctags", "not found"), ("true", "is not universal-ctags")]
)
def test_without_ctags_the_other_figures_stay_and_ctags_is_named(
    tree: tuple[Path, int, int], ctags: str, why: str
):
    root, files, lines = tree
    before = _contents(root)
    result, stderr = _bench(root, "--ctags", ctags)
    assert result["files"] == files and result["lines"] == lines
    assert result["seconds"] > 0 and result["lines_per_s"] > 0
    assert result["samples"] == 4
    for key in ("reindex_p50_ms", "reindex_p95_ms", "related_p50_ms", "database_bytes"):
        assert result[key] > 0, key
    for key in ("ctags_seconds", "ctags_list_seconds", "ratio", "ratio_same_files"):
        assert result[key] is None, key
    assert why in result["ctags_error"] and "universal-ctags" in result["ctags_error"]
    assert why in stderr and "indexing" in stderr  # progress and the reason, on stderr
    assert _contents(root) == before  # the re-indexes change the index, never the files


@pytest.mark.skipif(not _universal_ctags(), reason="universal-ctags is not installed")
def test_ctags_indexes_the_tree_and_the_same_files_in_the_same_run(tree: tuple[Path, int, int]):
    """`ctags -R` walks the whole tree (also the vendored and binary files the indexer leaves
    out); `ctags -L` reads exactly the indexer's files."""
    root, files, _ = tree
    tsx = list((root / "tsx").iterdir())  # a language ctags 5.9 does not read: it skips them
    shutil.rmtree(root / "tsx")
    files -= len(tsx)
    result, stderr = _bench(root)
    assert result["ctags_error"] is None and "Universal Ctags" in result["ctags_version"]
    assert result["ctags_list_files"] == result["files"] == files
    assert result["ctags_files"] >= files + 2  # also node_modules/dep/index.js and blob.py
    assert "-R over" in stderr and "-L on the same" in stderr
    for ctags, ratio in (("ctags_seconds", "ratio"), ("ctags_list_seconds", "ratio_same_files")):
        assert result[ctags] > 0
        assert result[ratio] == pytest.approx(result["seconds"] / result[ctags], rel=0.05)


def test_a_path_that_is_not_a_folder_is_refused(tmp_path: Path):
    done = subprocess.run(
        [*CLI, str(tmp_path / "missing")], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "not a folder" in done.stderr and done.stdout == ""
