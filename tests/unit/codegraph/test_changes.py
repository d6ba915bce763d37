"""Change detection (codegraph/changes) and call checking (nextedits) on real tree-sitter
trees: each propagating kind in Python, and signatures in TypeScript and Go."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeagent_lsp.codegraph.changes import Change, ChangeTracker, diff, read
from codeagent_lsp.codegraph.live import LiveTrees
from codeagent_lsp.nextedits import Site, SourceFile, bind, call_args, checked_call, fits

BASE = (
    "def area(width, height):\n    return width * height\n\n"
    "class Box:\n    def __init__(self, w):\n        self.w = w\n\n"
    "    def grow(self, k):\n        pass\n\n"
    "async def fetch(n):\n    return n\n\nLIMIT = 3\n"
)


def changes_between(before: str, after: str) -> list[tuple[str, str]]:
    old = read(before.encode(), "python").signatures
    new = read(after.encode(), "python").signatures
    return [(c.kind, c.sentence()) for c in diff(old, new)]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("def area(", "def surface(", [("rename", "`area` was renamed to `surface`")]),
        ("def grow(", "def expand(", [("rename", "`grow` was renamed to `expand`")]),
        (
            "(width, height)",
            "(width, height, unit)",
            [("signature", "`area` now requires `unit` (after `height`)")],
        ),
        (
            "(width, height)",
            "(width, height, unit='cm')",
            [("signature", "`area` now takes `unit` (after `height`)")],
        ),
        ("(width, height)", "(width)", [("signature", "`area` no longer takes `height`")]),
        (
            "(width, height)",
            "(height, width)",
            [("signature", "`area` now takes (height, width) in that order")],
        ),
        (
            "(width, height)",
            "(width, h)",
            [("signature", "`area`'s parameter `height` is now `h`")],
        ),
        ("async def fetch", "def fetch", [("async", "`fetch` is no longer async")]),
        ("def area", "async def area", [("async", "`area` is now async")]),
        (
            "(self, w)",
            "(self, w, h)",
            [("signature", "the constructor of `Box` now requires `h` (after `w`)")],
        ),
        ("LIMIT = 3\n", "", [("removed", "`LIMIT` moved")]),
        ("    return width * height", "    return height * width", []),
    ],
)
def test_each_propagating_change_is_named(before: str, after: str, expected: list):
    assert before in BASE
    assert changes_between(BASE, BASE.replace(before, after)) == expected


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("def area(", "def surface("),
        ("(width, height)", "(width, height, unit)"),
        ("def area(", "async def area("),
    ],
)
def test_the_live_tree_of_a_document_gives_the_changes_of_its_text(before: str, after: str):
    """The CodeGraph's incrementally parsed tree stands in for a parse of the text."""
    edited = BASE.replace(before, after, 1)
    live = LiveTrees()
    live.update("k", BASE.encode(), "python")
    live.update("k", edited.encode(), "python")
    tree = live.tree("k", edited.encode())
    assert tree is not None
    with_tree, without = ChangeTracker(), ChangeTracker()
    for tracker in (with_tree, without):
        tracker.update("k", BASE.encode(), "python")
    found = with_tree.update("k", edited.encode(), "python", tree)
    assert found and found == without.update("k", edited.encode(), "python")


def test_a_parameter_that_becomes_required_is_said():
    said = changes_between("def f(a, b=1):\n    pass\n", "def f(a, b):\n    pass\n")
    assert said == [("signature", "`b` of `f` is now required")]


def test_a_definition_that_does_not_parse_keeps_its_last_good_signature():
    tracker = ChangeTracker()
    assert tracker.update("k", BASE.encode(), "python") is None  # the baseline
    half = BASE.replace("def area(width, height):", "def area(width, height, u")
    assert tracker.update("k", half.encode(), "python") is None  # nothing fired half-way
    done = BASE.replace("(width, height)", "(width, height, unit)").encode()
    assert [c.kind for c in tracker.update("k", done, "python") or []] == ["signature"]
    undone = tracker.update("k", BASE.encode(), "python")
    assert undone == [] and tracker.changes() == {}


def test_typescript_and_go_signatures():
    ts = read(
        b"export async function area(w: number, h?: number, ...r: number[]) { return 1 }\n"
        b"class C { constructor(private r: number) {} }\nconst f = (a, b = 2) => a;\n",
        "typescript",
    ).signatures
    assert [(p.name, p.kind, p.default) for p in ts["area"].params] == [
        ("w", "positional", False),
        ("h", "positional", True),
        ("r", "rest", False),
    ]
    assert ts["area"].is_async and [p.name for p in ts["C"].params] == ["r"]
    assert [p.default for p in ts["f"].params] == [False, True]
    go = read(b"package g\nfunc Area(w, h float64, o ...int) float64 { return w }\n", "go")
    assert [(p.name, p.kind) for p in go.signatures["Area"].params] == [
        ("w", "positional"),
        ("h", "positional"),
        ("o", "rest"),
    ]


def args_of(code: str):
    source = SourceFile(Path("x.py"), code)
    node = source.tree.root_node
    while node.type not in ("call", "call_expression"):
        node = node.named_children[0]
    return call_args(node)


def signature(code: str, name: str = "f"):
    return read(code.encode(), "python").signatures[name]


def test_calls_bind_as_python_binds_them():
    params = signature("def f(a, b=1, *rest, key, **more):\n    pass\n").params
    assert bind(params, args_of("f(1, key=2)")) == ["a", "key"]
    assert bind(params, args_of("f(1, 2, 3, key=4, x=5)")) == ["a", "b", "*", "key", "**"]
    assert bind(params, args_of("f(1)")) is None  # key is required
    assert bind(params, args_of("f(a=1, a=2, key=3)")) is None


def test_a_call_fits_until_its_arguments_reach_other_parameters():
    old = signature("def f(a, b):\n    pass\n")
    reordered = signature("def f(b, a):\n    pass\n")
    renamed = signature("def f(a, c):\n    pass\n")
    assert fits(old, reordered, args_of("f(1, 2)")) == "moved"
    assert fits(old, reordered, args_of("f(a=1, b=2)")) == "fits"
    assert fits(old, renamed, args_of("f(1, 2)")) == "fits"
    assert fits(old, renamed, args_of("f(1, b=2)")) == "unbound"
    assert fits(old, renamed, args_of("f(*xs)")) == "fits"  # a splat: nothing certain


def test_a_model_rewrite_is_kept_only_when_it_parses_and_binds(tmp_path: Path):
    text = "from geo import area\n\nx = area(2, 3)\n"
    old = signature("def area(w, h):\n    pass\n", "area")
    new = signature("def area(w, h, unit):\n    pass\n", "area")
    site = Site(
        "r", "app.py", tmp_path / "app.py", Change("signature", old, new),
        (2, 4), (2, 14), "area(2, 3)", None,
    )  # fmt: skip
    assert checked_call(site, "```python\narea(2, 3, 'cm')\n```", text) == "area(2, 3, 'cm')"
    assert checked_call(site, "area(2, 3, unit='cm')", text) == "area(2, 3, unit='cm')"
    assert checked_call(site, "```python\narea(2, 3)\n```", text) is None  # old arity
    assert checked_call(site, "```python\narea(2, 3, 'cm'\n```", text) is None  # no parse
    assert checked_call(site, "```python\nvolume(2, 3, 4)\n```", text) is None  # other name
    assert checked_call(site, "starimportstar", text) is None
