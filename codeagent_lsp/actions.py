"""The code-action pipeline (explain, docstring, fix, tests) shared by the server's code actions
and the headless commands: prompt from the code and the CodeGraph, answer from the engine,
checked before it is offered. Nothing here knows LSP; results are plain line edits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from codeagent_lsp.assistant import Assistant
from codeagent_lsp.codegraph import extract, languages
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.instruct import (
    CodeAtLine,
    code_at,
    docstring_request,
    explain_request,
    fix_replacement,
    fix_request,
    format_docstring,
    python_tests,
    tests_request,
)

EXAMPLE_LINES = 60
"""Lines of an existing test file shown to the model as the project's style."""


@dataclass(frozen=True)
class LineEdit:
    """Replace lines first..last (0-based, inclusive; last = first - 1 inserts before first)."""

    first: int
    last: int
    text: str


@dataclass(frozen=True)
class TestsProposal:
    file: Path
    code: str
    exists: bool


async def explain(
    assistant: Assistant, index: WorkspaceIndex | None, path: Path, text: str, line: int,
    key: str, selection_end: int | None = None,
) -> tuple[str, str]:
    """(title, Markdown) explaining the lines line..selection_end when a selection spans lines,
    else the definition around `line`."""
    target = code_at(text, str(path), line)
    if selection_end is not None and selection_end > line:
        selected = "\n".join(text.split("\n")[line : selection_end + 1])
        target = CodeAtLine(selected, target.language, "", line)
    related: list[tuple[str, str]] = []
    if index is not None:
        snippets = await asyncio.to_thread(
            index.related, path, text, line, 600, lambda s: len(s) // 4 + 1
        )
        related = [(s.path, s.text) for s in snippets if s.reason != "ranked"]
        if target.name:
            related += await asyncio.to_thread(_callers, index, target.name.split(".")[-1])
    system, user = explain_request(target, path.name, related)
    limit = assistant.settings.actions.maxTokens
    answer = await assistant.instruct(key, system, user, max_tokens=limit)
    title = target.name or f"{path.name}:{line + 1}"
    return title, f"# {title}\n\n{answer.text.strip()}\n"


async def docstring(
    assistant: Assistant, path: Path, text: str, line: int, key: str
) -> LineEdit | None:
    """A documentation comment for the definition around `line`; None when the answer is
    empty or would add a syntax error."""
    target = code_at(text, str(path), line)
    system, user = docstring_request(target, path.name)
    answer = await assistant.instruct(key, system, user, max_tokens=160)
    lines = text.split("\n")
    placed = format_docstring(answer.text, target, lines)
    if placed is None:
        return None
    row, inserted = placed
    edit = LineEdit(row, row - 1, inserted.removesuffix("\n"))
    if syntax_errors(apply(text, edit), path) > syntax_errors(text, path):
        return None  # the file may be mid-edit elsewhere; the docstring must add no error
    return edit


async def fix(
    assistant: Assistant, path: Path, text: str, first: int, last: int, message: str, key: str
) -> LineEdit | None:
    """A minimal edit: only lines first..last are replaced, and only when the result parses
    (or, in a file with several errors, has at least one fewer)."""
    lines = text.split("\n")
    last = min(last, len(lines) - 1)
    target = code_at(text, str(path), first)
    system, user = fix_request(lines[first : last + 1], first, target, path.name, message)
    answer = await assistant.instruct(key, system, user, max_tokens=256)
    replacement = fix_replacement(answer.text, target, first, last)
    if replacement is None:
        return None
    edit = LineEdit(first, last, replacement)
    edited = apply(text, edit)
    before = syntax_errors(text, path)
    if edited == text or syntax_errors(edited, path) > max(0, before - 1):
        return None
    return edit


async def tests(
    assistant: Assistant, root: Path, path: Path, text: str, line: int, key: str,
    index: WorkspaceIndex | None = None,
) -> TestsProposal | None:
    """pytest tests for the definition around `line`, for the file the project's layout
    suggests (tests/test_<module>.py when there is a tests folder, else beside the module)."""
    relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    module = relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    target = code_at(text, str(path), line)
    test_file = test_file_for(root, path)
    example = await asyncio.to_thread(example_tests, root, test_file, index)
    system, user = tests_request(target, module, example, [])
    limit = assistant.settings.actions.maxTokens
    answer = await assistant.instruct(key, system, user, max_tokens=limit)
    code = python_tests(answer.text, module, target.name)
    if code is None:
        return None
    return TestsProposal(test_file, code, test_file.exists())


def _callers(index: WorkspaceIndex, name: str, limit: int = 3) -> list[tuple[str, str]]:
    """A few call sites of `name`, each with the line before and after it."""
    found = []
    for ref in index.references(name):
        if ref.reference.kind != "call":
            continue
        location = index.reference_location(ref)
        if location is None:
            continue
        try:
            lines = location.path.read_text(encoding="utf-8", errors="replace").split("\n")
        except OSError:
            continue
        row = ref.reference.span.start_line
        found.append((f"{ref.path} (a caller)", "\n".join(lines[max(0, row - 1) : row + 2])))
        if len(found) == limit:
            break
    return found


def test_file_for(root: Path, source: Path) -> Path:
    folder = root / "tests" if (root / "tests").is_dir() else source.parent
    return folder / f"test_{source.stem}.py"


def example_tests(root: Path, test_file: Path, index: WorkspaceIndex | None = None) -> str:
    """The beginning of an existing test file: the target itself, else the project's test files
    the CodeGraph knows (those in the target's folder first), else ones beside the target."""
    known = []
    if index is not None:
        known = sorted(
            (root / f.path for f in index.store.files() if _is_test_file(f.path)),
            key=lambda p: (p.parent != test_file.parent, str(p)),
        )
    nearby = sorted(test_file.parent.glob("test_*.py"))[:20]
    for candidate in [test_file, *known[:20], *nearby]:
        if candidate.is_file() and candidate.resolve().is_relative_to(root.resolve()):
            lines = candidate.read_text(encoding="utf-8", errors="replace").split("\n")
            return "\n".join(lines[:EXAMPLE_LINES])
    return ""


def _is_test_file(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def apply(text: str, edit: LineEdit) -> str:
    lines = text.split("\n")
    return "\n".join([*lines[: edit.first], *edit.text.split("\n"), *lines[edit.last + 1 :]])


def syntax_errors(text: str, path: Path) -> int:
    """ERROR and MISSING nodes tree-sitter finds (0 for languages it does not know)."""
    language = languages.language_for(path)
    if language is None:
        return 0
    tree = extract.parse(text.encode("utf-8", errors="replace"), language)
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        elif node.has_error:  # only subtrees holding an error are worth walking
            stack.extend(node.children)
    return count
