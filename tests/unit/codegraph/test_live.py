"""Open documents are re-parsed incrementally, and the result is the same as a full parse."""

from __future__ import annotations

from hypothesis import given, settings

from codeagent_lsp.codegraph.extract import extract, parse
from codeagent_lsp.codegraph.live import LiveTrees
from tests.edits import apply, splices

SOURCE = (
    "import os\n\n\nclass Shape:\n    def area(self) -> float:\n        return 0.0\n\n\n"
    "def total(shapes: list[Shape]) -> float:\n    return sum(s.area() for s in shapes)\n"
)


def test_second_parse_is_incremental_and_sees_the_edit():
    live = LiveTrees()
    _, first = live.update("doc", SOURCE.encode(), "python")
    edited = SOURCE.replace("def total", "def grand_total")
    tree, incremental = live.update("doc", edited.encode(), "python")
    assert not first and incremental
    names = [d.name for d in extract(edited.encode(), "python", tree).definitions]
    assert "grand_total" in names and "total" not in names


@settings(max_examples=60, deadline=None)
@given(edits=splices(len(SOURCE), "abcdef():\n _é", removed=12, inserted=10, edits=6))
def test_incremental_parse_equals_a_full_parse(edits):
    live = LiveTrees()
    text = SOURCE
    live.update("doc", text.encode(), "python")
    for edit in edits:
        text = apply(text, edit)
        tree, _ = live.update("doc", text.encode(), "python")
        assert str(tree.root_node) == str(parse(text.encode(), "python").root_node)
        assert extract(text.encode(), "python", tree) == extract(text.encode(), "python")


def test_forget_starts_over():
    live = LiveTrees()
    live.update("doc", SOURCE.encode(), "python")
    live.forget("doc")
    _, incremental = live.update("doc", SOURCE.encode(), "python")
    assert not incremental


def test_a_reader_gets_its_own_copy_of_the_tree_of_that_text():
    live = LiveTrees()
    live.update("doc", SOURCE.encode(), "python")
    assert live.tree("doc", b"other text") is None and live.tree("other", SOURCE.encode()) is None
    copy = live.tree("doc", SOURCE.encode())
    assert copy is not None
    live.update("doc", ("# a comment\n" + SOURCE).encode(), "python")  # edits the kept tree
    assert str(copy.root_node) == str(parse(SOURCE.encode(), "python").root_node)
    assert copy.root_node.children[0].start_point == (0, 0)
