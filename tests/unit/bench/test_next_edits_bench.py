"""`bench next-edits` on a small repository whose truth is known: every use found, none of the
look-alikes (a method of the same name on another object, a local variable of the same
name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeagent_lsp.bench import next_edits_ts
from codeagent_lsp.bench.next_edits import run_next_edits_bench
from codeagent_lsp.settings import Settings

FILES = {
    "shapes/__init__.py": "from .geo import area\n",
    "shapes/geo.py": "def area(width, height):\n    return width * height\n",
    "app.py": (
        "from shapes.geo import area\n"
        "import shapes.geo as g\n\n\n"
        "def total():\n"
        "    return area(2, 3) + g.area(width=1, height=2)\n"
    ),
    "other.py": (
        "from shapes import area\n\n\n"
        "def rooms(room, area_of):\n"
        "    area = area_of(room)\n"
        "    return room.area() + area\n\n\n"
        "SIDE = area(1, 1)\n"
    ),
    "more.py": "import shapes\n\nBIG = shapes.area(5, 5)\n",  # through the package's re-export
}


def test_the_uses_found_match_the_truth_of_ast(tmp_path: Path):
    root = tmp_path / "repo"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    result = run_next_edits_bench(root, functions=5, seed=0, settings=Settings())
    assert result["functions"] == 1
    kinds = result["kinds"]
    # The re-export, both imports of the name, and the four calls.
    assert kinds["rename"]["truth"] == 7
    assert kinds["add-required"]["truth"] == 4  # every call lacks the new argument
    assert kinds["add-default"]["truth"] == 0  # every call still fits
    assert kinds["reorder"]["truth"] == 3  # the call by keywords still fits
    for kind, rates in kinds.items():
        assert rates["flagged"] == rates["hit"] == rates["truth"], kind
    assert result["p50_ms"] is not None


TS_FILES = {
    "src/geo.ts": "export function area(width: number, height: number): number {\n"
    "  return width * height\n}\n",
    "src/index.ts": "export { area } from './geo'\n",
    "src/app.ts": (
        "import { area } from './geo'\n"
        "import * as g from './geo'\n\n"
        "export function total(): number {\n"
        "  return area(2, 3) + g.area(1, 2)\n}\n"
    ),
    "src/other.ts": (
        "import { area } from './index'\n\n"
        "export function rooms(room: any, areaOf: (r: unknown) => number) {\n"
        "  const size = areaOf(room)\n"
        "  return room.area() + size + area(1, 1)\n}\n"
    ),
}


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_without_the_typescript_compiler_the_figures_are_none_and_the_fix_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(next_edits_ts, "TYPESCRIPT_HOME", tmp_path / "empty")
    write(tmp_path / "repo", TS_FILES)
    result = run_next_edits_bench(
        tmp_path / "repo", functions=5, seed=0, settings=Settings(), language="typescript"
    )
    assert result["all"] is None and result["p50_ms"] is None
    assert "npm install" in str(result["error"]) or "node is not installed" in str(result["error"])


@pytest.mark.skipif(
    not (next_edits_ts.TYPESCRIPT_HOME / "node_modules" / "typescript").is_dir(),
    reason=f"the TypeScript compiler is not installed ({next_edits_ts.TYPESCRIPT_INSTALL})",
)
def test_typescript_uses_found_match_the_compilers_references(tmp_path: Path):
    write(tmp_path / "repo", TS_FILES)
    result = run_next_edits_bench(
        tmp_path / "repo", functions=5, seed=0, settings=Settings(), language="typescript"
    )
    assert result["functions"] == 1, result
    kinds = result["kinds"]
    # The re-export, the two imports of the name, the three calls (not the method, not areaOf).
    assert kinds["rename"]["truth"] == 6
    assert kinds["add-required"]["truth"] == 3
    assert kinds["add-default"]["truth"] == 0
    for kind, rates in kinds.items():
        assert rates["flagged"] == rates["hit"] == rates["truth"], kind
