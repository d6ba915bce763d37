"""One path for all languages: `plan_tests` -> `tests_request` (the prompt) -> `assemble`
(the model's answer as insertions that parse); STYLES picks a language's `Style`."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import tree_sitter

from codeagent_lsp.actions.prompts import SYSTEM, fenced_blocks
from codeagent_lsp.actions.testgen.base import (
    Insertion,
    Style,
    TestPlan,
    apply,
    parse_errors,
    tree_errors,
)
from codeagent_lsp.actions.testgen.go import GoStyle
from codeagent_lsp.actions.testgen.java import JavaStyle
from codeagent_lsp.actions.testgen.native import NativeStyle
from codeagent_lsp.actions.testgen.python import PythonStyle
from codeagent_lsp.actions.testgen.rust import RustStyle
from codeagent_lsp.actions.testgen.script import ScriptStyle
from codeagent_lsp.codegraph import extract, languages
from codeagent_lsp.codegraph.extract import CodeAtLine

_SCRIPT, _NATIVE = ScriptStyle(), NativeStyle()
STYLES: dict[str, Style] = {
    "python": PythonStyle(),
    "javascript": _SCRIPT,
    "typescript": _SCRIPT,
    "tsx": _SCRIPT,
    "go": GoStyle(),
    "rust": RustStyle(),
    "java": JavaStyle(),
    "c": _NATIVE,
    "cpp": _NATIVE,
}


def plan_tests(
    root: Path, source: Path, text: str, name: str, files: tuple[str, ...]
) -> TestPlan | None:
    """Where tests of `name` (a qualified name: a method is tested through its class) go and
    with which framework; None for a language without a test style."""
    language = languages.language_for(source)
    style = STYLES.get(language or "")
    if style is None or not name:
        return None
    symbol = re.split(r"::|\.", name)[0]
    return style.plan(root, source, text, symbol, files)


def tests_request(target: CodeAtLine, plan: TestPlan, source: str, example: str) -> tuple[str, str]:
    """(system, user) asking for tests of `target` in the plan's framework, in the style of an
    existing test file of the project when there is one."""
    fence = plan.language
    head = "\n".join(p for p in (plan.preamble, *plan.imports) if p)
    parts = [
        f"Write {plan.framework} tests for `{target.name}` from `{source}`. "
        f"{STYLES[plan.language].how_for(plan)} Cover the usual case and the edge cases. "
        f"The test file starts with:\n```{fence}\n{head}\n```\n"
        f"Reply with one ```{fence} block holding the tests only; do not repeat `{plan.symbol}`.",
    ]
    if example:
        parts.append(f"Follow the style of this existing test file:\n```{fence}\n{example}\n```")
    parts.append(f"```{target.language}\n{target.code}\n```")
    return SYSTEM, "\n\n".join(parts)


def assemble(plan: TestPlan, answer: str, existing: str | None) -> list[Insertion] | None:
    """The insertions that create (`existing` None) or extend the test file with the test
    items of the answer; None when the answer has none, or the result would not parse."""
    style = STYLES[plan.language]
    items, imports = [], []
    for block in fenced_blocks(answer):
        found = _pieces(style, plan, block)
        if tree_errors(block, plan.language):
            salvaged, uses = _pieces(style, plan, _closed(block))
            salvaged = [i for i in salvaged if i in found[0] or _has_statements(i)]
            found = max(found, (salvaged, uses), key=lambda f: len(f[0]))
        items += found[0]
        imports += found[1]
    if not items:
        return None
    body = "\n".join(items)
    kept = [i for i in imports if style.keep_import(i, plan, body)]
    wanted = list(dict.fromkeys([*style.needed_imports(plan, body), *kept]))
    if existing is None:
        insertions = [Insertion(0, style.new_file(plan, wanted, items))]
        before = 0
    else:
        tree = extract.parse(existing.encode("utf-8", errors="replace"), plan.language)
        insertions = style.extend(plan, tree, existing, wanted, items)
        before = parse_errors(existing, plan.language)
    if parse_errors(apply(existing or "", insertions), plan.language) > before:
        return None
    return insertions


def _pieces(style: Style, plan: TestPlan, block: str) -> tuple[list[str], list[str]]:
    """(test items, imports) of one code block, dedented."""
    items: list[str] = []
    imports: list[str] = []
    code = block.encode("utf-8")
    for node in _pick(
        extract.parse(code, plan.language).root_node,
        lambda n: style.is_item(n, plan) or n.type in style.import_types,
    ):
        start = style.item_start(node)
        line_start = code.rfind(b"\n", 0, start.start_byte) + 1
        piece = code[line_start : node.end_byte].decode("utf-8", errors="replace")
        if piece[: start.start_byte - line_start].strip():
            piece = code[start.start_byte : node.end_byte].decode("utf-8", errors="replace")
        found = imports if node.type in style.import_types else items
        found.append(textwrap.dedent(piece).strip())
    return items, imports


_CLOSER = {"(": ")", "[": "]", "{": "}"}


def _has_statements(item: str) -> bool:
    """Whether a salvaged item kept anything below its first line but closing brackets."""
    return any(row.strip(" \t)]};") for row in item.split("\n")[1:])


def _closed(block: str) -> str:
    """A block the token limit cut off (small models often repeat one assert until then): its
    partial last line dropped and the brackets left open closed, so the test that was being
    written keeps its complete statements. Brackets in strings are rare enough in tests (and
    balanced when they occur) to count them all."""
    text = block.rsplit("\n", 1)[0]
    stack: list[str] = []
    for char in text:
        if char in _CLOSER:
            stack.append(char)
        elif char in _CLOSER.values() and stack and _CLOSER[stack[-1]] == char:
            stack.pop()
    rows: list[str] = []
    for opener in reversed(stack):
        if opener == "{" or not rows:
            rows.append(_CLOSER[opener])
        else:
            rows[-1] += _CLOSER[opener]
    return "\n".join([text, *rows])


def _pick(node: tree_sitter.Node, wanted) -> Iterator[tree_sitter.Node]:
    """Nodes `wanted` accepts and that parsed cleanly (a truncated answer's last test does
    not), without looking inside them."""
    if wanted(node):
        if not node.has_error:
            yield node
        return
    for child in node.named_children:
        yield from _pick(child, wanted)
