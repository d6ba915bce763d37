"""The code-action pipeline (explain, docstring, fix, tests) shared by the server's code actions
and the headless commands: prompt from the code and the CodeGraph, answer from the engine,
checked before it is offered. Nothing here knows LSP; results are plain line edits."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeagent_lsp.actions import testgen
from codeagent_lsp.actions.prompts import (
    docstring_request,
    explain_request,
    fix_replacement,
    fix_request,
    format_docstring,
)
from codeagent_lsp.assistant import Assistant
from codeagent_lsp.codegraph import languages
from codeagent_lsp.codegraph.extract import CodeAtLine, code_at
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.lines import split_lines

EXAMPLE_LINES = 60
"""Lines of an existing test file shown to the model as the project's style."""
WALK_LIMIT = 5000
"""Files listed at most when a project without an index is searched for its tests."""
_NOT_SOURCES = {"node_modules", "target", "build", "dist", "vendor", "__pycache__", "venv"}

Run = Callable[..., Awaitable[Any]]
"""How a step that grows with the document (parsing it, splitting it) runs off the event loop:
`run(function, *args)`. asyncio.to_thread for one client; a node passes the client's own
heavy lane, so one client's actions on a huge file queue behind each other, not other clients'
requests (server.CodeagentServer.heavy_lane)."""


@dataclass(frozen=True)
class LineEdit:
    """Replace lines first..last (0-based, inclusive; last = first - 1 inserts before first)."""

    first: int
    last: int
    text: str


@dataclass(frozen=True)
class TestsProposal:
    plan: testgen.TestPlan
    existing: str | None
    """The test file's text before the edit; None when the edit creates it."""
    insertions: list[testgen.Insertion]

    @property
    def code(self) -> str:
        """What is added, as a reader wants to see it."""
        return "\n".join(i.text.strip("\n") for i in self.insertions) + "\n"

    @property
    def after(self) -> str:
        return testgen.apply(self.existing or "", self.insertions)


async def explain(
    assistant: Assistant,
    index: WorkspaceIndex | None,
    path: Path,
    text: str,
    line: int,
    key: str,
    selection_end: int | None = None,
    run: Run = asyncio.to_thread,
) -> tuple[str, str]:
    """(title, Markdown) explaining the lines line..selection_end when a selection spans lines,
    else the definition around `line`."""
    target = await run(_explained, text, path, line, selection_end)
    related: list[tuple[str, str]] = []
    if index is not None:
        snippets = await run(index.related, path, text, line, 600, lambda s: len(s) // 4 + 1)
        related = [(s.path, s.text) for s in snippets if s.reason != "ranked"]
        if target.name:
            related += await run(_callers, index, target.name.split(".")[-1])
    system, user = explain_request(target, path.name, related)
    limit = assistant.settings.actions.maxTokens
    answer = await assistant.instruct(key, system, user, max_tokens=limit)
    title = target.name or f"{path.name}:{line + 1}"
    return title, f"# {title}\n\n{answer.text.strip()}\n"


def _explained(text: str, path: Path, line: int, selection_end: int | None) -> CodeAtLine:
    """The code an explanation is about: the selected lines, else the definition at `line`."""
    target = code_at(text, str(path), line)
    if selection_end is not None and selection_end > line:
        selected = "\n".join(split_lines(text)[line : selection_end + 1])
        target = CodeAtLine(selected, target.language, "", line)
    return target


async def docstring(
    assistant: Assistant, path: Path, text: str, line: int, key: str, run: Run = asyncio.to_thread
) -> LineEdit | None:
    """A documentation comment for the definition around `line`; None when the answer is
    empty or would add a syntax error."""
    target = await run(code_at, text, str(path), line)
    system, user = docstring_request(target, path.name)
    answer = await assistant.instruct(key, system, user, max_tokens=160)
    return await run(_placed_docstring, answer.text, target, text, path)


def _placed_docstring(answer: str, target: CodeAtLine, text: str, path: Path) -> LineEdit | None:
    lines = split_lines(text)
    placed = format_docstring(answer, target, lines)
    if placed is None:
        return None
    row, inserted = placed
    edit = LineEdit(row, row - 1, inserted.removesuffix("\n"))
    if syntax_errors(apply(text, edit), path) > syntax_errors(text, path):
        return None  # the file may be mid-edit elsewhere; the docstring must add no error
    return edit


async def fix(
    assistant: Assistant,
    path: Path,
    text: str,
    first: int,
    last: int,
    message: str,
    key: str,
    run: Run = asyncio.to_thread,
) -> LineEdit | None:
    """A minimal edit: only lines first..last are replaced, and only when the result parses
    (or, in a file with several errors, has at least one fewer)."""
    chosen, last, target = await run(_to_fix, text, path, first, last)
    system, user = fix_request(chosen, first, target, path.name, message)
    answer = await assistant.instruct(key, system, user, max_tokens=256)
    return await run(_checked_fix, answer.text, target, text, path, first, last)


def _to_fix(text: str, path: Path, first: int, last: int) -> tuple[list[str], int, CodeAtLine]:
    """Lines first..last, `last` cut to the text's last line, and the code around `first`."""
    lines = split_lines(text)
    last = min(last, len(lines) - 1)
    return lines[first : last + 1], last, code_at(text, str(path), first)


def _checked_fix(
    answer: str, target: CodeAtLine, text: str, path: Path, first: int, last: int
) -> LineEdit | None:
    replacement = fix_replacement(answer, target, first, last)
    if replacement is None:
        return None
    edit = LineEdit(first, last, replacement)
    edited = apply(text, edit)
    before = syntax_errors(text, path)
    if edited == text or syntax_errors(edited, path) > max(0, before - 1):
        return None
    return edit


async def tests(
    assistant: Assistant,
    root: Path,
    path: Path,
    text: str,
    line: int,
    key: str,
    index: WorkspaceIndex | None = None,
    run: Run = asyncio.to_thread,
) -> TestsProposal | None:
    """Tests for the definition around `line`, in the project's framework and test file
    (testgen.plan_tests); None when the answer holds no test that parses."""
    target = await run(code_at, text, str(path), line)
    files = await run(project_files, root, path, index)
    plan = await run(testgen.plan_tests, root, path, text, target.name, files)
    if plan is None:
        return None
    example = await run(example_tests, root, plan, files)
    source = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    system, user = testgen.tests_request(target, plan, source, example)
    limit = assistant.settings.actions.maxTokens
    answer = await assistant.instruct(key, system, user, max_tokens=limit)
    existing = text if plan.file == path else _read(plan.file)
    insertions = await run(testgen.assemble, plan, answer.text, existing)
    if insertions is None:
        return None
    return TestsProposal(plan, existing, insertions)


def _callers(index: WorkspaceIndex, name: str, limit: int = 3) -> list[tuple[str, str]]:
    """A few call sites of `name`, each with the line before and after it."""
    found = []
    for ref in index.for_prompt(index.references(name)):
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


def project_files(root: Path, source: Path, index: WorkspaceIndex | None) -> tuple[str, ...]:
    """The project's code files relative to `root`: those the CodeGraph indexed, else a bounded
    walk of the folder (headless runs have no index)."""
    where = index.locate(source) if index is not None else None
    if index is not None and where is not None:
        repo = where[0]  # only files that may go into a prompt: examples are sent to the model
        return tuple(f.path for f in index.store.files(repo) if index.may_prompt(repo, f.path))
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _NOT_SOURCES)
        found += [(Path(folder) / n).relative_to(root).as_posix() for n in sorted(names)]
        if len(found) >= WALK_LIMIT:
            break
    return tuple(found[:WALK_LIMIT])


def example_tests(root: Path, plan: testgen.TestPlan, files: tuple[str, ...]) -> str:
    """The beginning of an existing test file: the target itself, else the project's test files
    in the same language (those in the target's folder first)."""
    extensions = languages.spec(plan.language).extensions
    known = sorted(
        (root / f for f in files if testgen.looks_like_test(f) and f.endswith(extensions)),
        key=lambda p: (p.parent != plan.file.parent, str(p)),
    )
    own = [] if plan.in_source else [plan.file]  # a Rust source file is no example of tests
    for candidate in [*own, *known[:20]]:
        if candidate.is_file() and candidate.resolve().is_relative_to(root.resolve()):
            lines = candidate.read_text(encoding="utf-8", errors="replace").split("\n")
            return "\n".join(lines[:EXAMPLE_LINES])
    return ""


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def apply(text: str, edit: LineEdit) -> str:
    """`text` with the edit made on LSP's lines; the lines kept keep their line ends."""
    rows = split_lines(text, keepends=True)
    head, tail = rows[: edit.first], rows[edit.last + 1 :]
    if head and not head[-1].endswith(("\n", "\r")):
        head[-1] += "\n"  # an insertion after the last line
    return "".join(head) + edit.text + ("\n" if tail else "") + "".join(tail)


def syntax_errors(text: str, path: Path) -> int:
    """Parse errors tree-sitter (and, for Python, Python) finds; 0 for unknown languages."""
    language = languages.language_for(path)
    return 0 if language is None else testgen.parse_errors(text, language)
