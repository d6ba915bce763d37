"""`bench next-edits` on a small repository whose truth is known: every use found, none of the
look-alikes (a method of the same name on another object, a local variable of the same
name)."""

from __future__ import annotations

from pathlib import Path

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
}


def test_the_uses_found_match_the_truth_of_ast(tmp_path: Path):
    root = tmp_path / "repo"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    result = run_next_edits_bench(root, functions=5, seed=0, settings=Settings())
    assert result["functions"] == 1
    kinds = result["kinds"]
    # The re-export, both imports of the name, and the three calls.
    assert kinds["rename"]["truth"] == 6
    assert kinds["add-required"]["truth"] == 3  # every call lacks the new argument
    assert kinds["add-default"]["truth"] == 0  # every call still fits
    assert kinds["reorder"]["truth"] == 2  # the call by keywords still fits
    for kind, rates in kinds.items():
        assert rates["flagged"] == rates["hit"] == rates["truth"], kind
    assert result["p50_ms"] is not None
