"""What every language's test style shares: the plan (`TestPlan`: where tests go, with which
framework), insertions into a file, parse checks, and the `Style` base class with its
defaults."""

from __future__ import annotations

import ast
import os
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tree_sitter

from codeagent_lsp.codegraph import extract
from codeagent_lsp.lines import line_count, line_starts

_TEST_PATH = re.compile(
    r"(^|/)(__tests__|tests?)/|(^|/)test_[^/]*$|[._]test\.|\.spec\.|Tests?\.java$"
)


@dataclass(frozen=True)
class TestPlan:
    file: Path
    language: str
    """The test file's language: its parser and code fence."""
    framework: str
    symbol: str
    """What the tests import or call: the function, or the class of a method."""
    preamble: str = ""
    """A new test file's first line (Go's package clause, Java's package statement)."""
    imports: tuple[str, ...] = ()
    """Import lines the tests need, added to an existing test file when it lacks them."""
    in_source: bool = False
    """The tests go into the source file itself (Rust's `mod tests`)."""


@dataclass(frozen=True)
class Insertion:
    """`text` inserted at the start of 0-based `line`; the line count means the end."""

    line: int
    text: str


def looks_like_test(relative: str) -> bool:
    return bool(_TEST_PATH.search(relative))


def parse_errors(text: str, language: str) -> int:
    """ERROR and MISSING nodes tree-sitter finds; Python's own parser must accept it too."""
    if language == "python":
        try:
            ast.parse(text)
        except (SyntaxError, ValueError):
            return max(1, tree_errors(text, language))
    return tree_errors(text, language)


def tree_errors(text: str, language: str) -> int:
    tree = extract.parse(text.encode("utf-8", errors="replace"), language)
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        elif node.has_error:  # only subtrees holding an error are worth walking
            stack.extend(node.children)
    return count


def apply(text: str, insertions: list[Insertion]) -> str:
    """`text` with each insertion at the start of its LSP line (its end past the last)."""
    for insertion in sorted(insertions, key=lambda i: -i.line):
        starts = line_starts(text, insertion.line)
        offset = starts[insertion.line] if insertion.line < len(starts) else len(text)
        text = text[:offset] + insertion.text + text[offset:]
    return text


def node_text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", errors="replace")


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.named_children:
        yield from walk(child)


def definition_name(node: tree_sitter.Node) -> str:
    """A definition's name: its `name` field, or a C declarator's innermost identifier."""
    while node is not None:
        named = node.child_by_field_name("name")
        if named is not None:
            return node_text(named)
        inner = node.child_by_field_name("definition") or node.child_by_field_name("declarator")
        if inner is None:
            return node_text(node) if node.type in ("identifier", "field_identifier") else ""
        node = inner
    return ""


def relative_import(test_file: Path, target: Path) -> str:
    spec = Path(os.path.relpath(target, test_file.parent)).as_posix()
    return spec if spec.startswith(".") else f"./{spec}"


class Style:
    """The defaults: tests are top-level items appended at the end of the test file, and new
    imports go after the file's last import."""

    framework = ""
    how = ""
    """What the tests look like, for the prompt."""
    import_types: frozenset[str] = frozenset()
    gap = "\n\n"
    indent = ""

    def plan(
        self, root: Path, source: Path, text: str, symbol: str, files: tuple[str, ...]
    ) -> TestPlan:
        raise NotImplementedError

    def is_item(self, node: tree_sitter.Node, plan: TestPlan) -> bool:
        raise NotImplementedError

    def how_for(self, plan: TestPlan) -> str:
        return self.how

    def item_start(self, node: tree_sitter.Node) -> tree_sitter.Node:
        return node

    def keep_import(self, text: str, plan: TestPlan, body: str) -> bool:
        return re.search(rf"\b{re.escape(plan.symbol)}\b", text) is None

    def needed_imports(self, plan: TestPlan, body: str) -> list[str]:
        return list(plan.imports)

    def import_lines(self, imports: list[str]) -> str:
        return "\n".join(imports)

    def new_file(self, plan: TestPlan, imports: list[str], items: list[str]) -> str:
        head = "\n\n".join(part for part in (plan.preamble, self.import_lines(imports)) if part)
        return f"{head}{self.gap}{self._block(items)}\n" if head else self._block(items) + "\n"

    def extend(
        self,
        plan: TestPlan,
        tree: tree_sitter.Tree,
        existing: str,
        imports: list[str],
        items: list[str],
    ) -> list[Insertion]:
        found = [node_text(n) for n in walk(tree.root_node) if n.type in self.import_types]
        missing = [i for i in imports if squash(i) not in {squash(f) for f in found}]
        result = [self._at_end(existing, self.gap[1:] + self._block(items) + "\n")]
        if missing:
            result.append(Insertion(self._imports_line(tree), self.import_lines(missing) + "\n"))
        return result

    def _block(self, items: list[str]) -> str:
        return self.gap.join(textwrap.indent(item, self.indent) for item in items)

    def _imports_line(self, tree: tree_sitter.Tree) -> int:
        """The line after the last top-level import, else after the package clause, else 0."""
        rows = [
            n.end_point.row + 1
            for n in tree.root_node.named_children
            if n.type in self.import_types or n.type in ("package_clause", "package_declaration")
        ]
        return max(rows, default=0)

    @staticmethod
    def _at_end(existing: str, text: str) -> Insertion:
        """`text` (its blank lines first) after the file's last line."""
        count = line_count(existing)
        if not existing.strip():
            return Insertion(count, text.lstrip("\n"))
        if existing.endswith(("\n", "\r")):
            return Insertion(count - 1, text)
        return Insertion(count, "\n" + text)


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
