"""Code actions: "Explain this code", "Add docstring" and "Fix: <message>".

The list comes back at once with no model call; the model runs in `codeAction/resolve`, with a
`$/progress` report, and cancelling the request stops it. Explanations are written as Markdown
files in the cache folder and opened with `window/showDocument` (a read-only document in
VS Code and Neovim alike); clients without showDocument get `window/showMessage`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls import uris

from codeagent_lsp.assistant import ModelUnavailable
from codeagent_lsp.codegraph import extract, languages
from codeagent_lsp.context.instruct import (
    code_at,
    docstring_request,
    explain_request,
    fix_replacement,
    fix_request,
    format_docstring,
    python_tests,
    tests_request,
)
from codeagent_lsp.server import CodeagentServer, prompt_location

EXPLAIN, DOCSTRING, FIX, TESTS = "explain", "docstring", "fix", "tests"
EXAMPLE_LINES = 60
"""Lines of an existing test file shown to the model as the project's style."""


def register(server: CodeagentServer) -> None:
    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[types.CodeActionKind.QuickFix, types.CodeActionKind.Refactor,
                               types.CodeActionKind.RefactorRewrite],
            resolve_provider=True,
        ),
    )
    def code_action(ls: CodeagentServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        document = ls.open_document(params.text_document.uri)
        line = params.range.start.line
        target = code_at(document.source, document.path, line)
        data = {"uri": params.text_document.uri, "line": line}
        actions = [_action("Explain this code", types.CodeActionKind.Refactor, EXPLAIN, data)]
        if target.name:
            actions.append(_action(f"Add docstring to {target.name}",
                                   types.CodeActionKind.RefactorRewrite, DOCSTRING, data))
        if target.name and target.language == "python":
            actions.append(_action(f"Generate tests for {target.name}",
                                   types.CodeActionKind.Source, TESTS, data))
        for diagnostic in params.context.diagnostics:
            fix = {**data, "line": diagnostic.range.start.line,
                   "end": diagnostic.range.end.line, "message": diagnostic.message}
            actions.append(_action(f"Fix: {diagnostic.message[:80]}",
                                   types.CodeActionKind.QuickFix, FIX, fix))
        return actions

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def resolve(ls: CodeagentServer, action: types.CodeAction) -> types.CodeAction:
        data: dict[str, Any] = _plain(action.data)
        token = await _begin(ls, action.title)
        try:
            if data["action"] == EXPLAIN:
                await _explain(ls, data)
            elif data["action"] == DOCSTRING:
                action.edit = await _docstring(ls, data)
            elif data["action"] == FIX:
                action.edit = await _fix(ls, data)
            elif data["action"] == TESTS:
                action.edit = await _tests(ls, data)
        except ModelUnavailable as exc:
            ls.tell_problem(str(exc))
        finally:
            if token:
                ls.work_done_progress.end(token, types.WorkDoneProgressEnd())
        return action


def _action(title: str, kind: str, name: str, data: dict[str, Any]) -> types.CodeAction:
    return types.CodeAction(title=title, kind=kind, data={**data, "action": name})


def _plain(data: Any) -> dict[str, Any]:
    """Action data comes back as the client stored it: a dict, or pygls's namedtuple."""
    return data._asdict() if hasattr(data, "_asdict") else dict(data or {})


async def _begin(ls: CodeagentServer, title: str) -> str | None:
    window = ls.client_capabilities.window
    if not (window and window.work_done_progress):
        return None
    token = f"codeagent-action-{uuid.uuid4().hex[:8]}"
    try:
        await ls.work_done_progress.create_async(token)
    except Exception:  # progress is a courtesy: the action goes on without it
        return None
    ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=f"codeagent: {title}"))
    return token


async def _explain(ls: CodeagentServer, data: dict[str, Any]) -> None:
    document = ls.open_document(data["uri"])
    path = Path(document.path)
    target = code_at(document.source, document.path, data["line"])
    related = []
    if ls.codegraph is not None:
        snippets = await asyncio.to_thread(
            ls.codegraph.related, path, document.source, data["line"], 600,
            lambda s: len(s) // 4 + 1,
        )
        related = [(s.path, s.text) for s in snippets if s.reason != "ranked"]
    system, user = explain_request(target, path.name, related)
    answer = await ls.assistant.instruct("explain:" + data["uri"], system, user)
    title = target.name or f"{path.name}:{data['line'] + 1}"
    markdown = f"# {title}\n\n{answer.text.strip()}\n"
    window = ls.client_capabilities.window
    if window and window.show_document and window.show_document.support:
        shown = _explanation_file(document.uri, title)
        shown.write_text(markdown, encoding="utf-8")
        await ls.window_show_document_async(
            types.ShowDocumentParams(uri=uris.from_fs_path(str(shown)) or "", take_focus=False)
        )
    else:
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Info, markdown))


def _explanation_file(uri: str, title: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "codeagent-lsp" / "explanations"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{uri}#{title}".encode()).hexdigest()[:10]
    return folder / f"{title.replace('/', '_')}-{digest}.md"


async def _docstring(ls: CodeagentServer, data: dict[str, Any]) -> types.WorkspaceEdit | None:
    document = ls.open_document(data["uri"])
    target = code_at(document.source, document.path, data["line"])
    system, user = docstring_request(target, Path(document.path).name)
    answer = await ls.assistant.instruct("docstring:" + data["uri"], system, user,
                                         max_tokens=160)
    lines = document.source.split("\n")
    placed = format_docstring(answer.text, target, lines)
    if placed is None:
        return None
    row, text = placed
    edited = "\n".join(lines[:row]) + ("\n" if row else "") + text + "\n".join(lines[row:])
    if _syntax_errors(edited, document.path) > _syntax_errors(document.source, document.path):
        return None  # the file may be mid-edit elsewhere; the docstring must add no error
    here = types.Position(row, 0)
    return _edit(data["uri"], types.Range(here, here), text)


async def _fix(ls: CodeagentServer, data: dict[str, Any]) -> types.WorkspaceEdit | None:
    """A minimal edit: only the diagnostic's lines are replaced, and only if the result parses
    (or, in a file with several errors, has at least one fewer)."""
    document = ls.open_document(data["uri"])
    lines = document.source.split("\n")
    first, last = data["line"], min(data["end"], len(lines) - 1)
    target = code_at(document.source, document.path, first)
    system, user = fix_request(lines[first : last + 1], first, target,
                               Path(document.path).name, data["message"])
    answer = await ls.assistant.instruct("fix:" + data["uri"], system, user, max_tokens=256)
    replacement = fix_replacement(answer.text, target, first, last)
    if replacement is None:
        return None
    edited = "\n".join([*lines[:first], replacement, *lines[last + 1 :]])
    before = _syntax_errors(document.source, document.path)
    if edited == document.source or _syntax_errors(edited, document.path) > max(0, before - 1):
        return None  # offered only when it removes a syntax error, or the file then parses
    end = types.Position(last, len(lines[last]))
    return _edit(data["uri"], types.Range(types.Position(first, 0), end), replacement)


async def _tests(ls: CodeagentServer, data: dict[str, Any]) -> types.WorkspaceEdit | None:
    """pytest tests in the file the project's layout suggests (tests/test_<module>.py when
    there is a tests folder, else test_<module>.py beside it), appended when it exists."""
    document = ls.open_document(data["uri"])
    _, relative = prompt_location(ls, document)
    root = _root_of(Path(document.path), relative)
    module = relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    target = code_at(document.source, document.path, data["line"])
    test_file = _test_file_for(root, Path(document.path))
    example = await asyncio.to_thread(_example_tests, root, test_file)
    system, user = tests_request(target, module, example, [])
    answer = await ls.assistant.instruct("tests:" + data["uri"], system, user, max_tokens=512)
    code = python_tests(answer.text, module, target.name)
    if code is None:
        return None
    uri = uris.from_fs_path(str(test_file)) or ""
    if test_file.exists():
        existing = test_file.read_text(encoding="utf-8", errors="replace")
        end = types.Position(existing.count("\n"), len(existing.split("\n")[-1]))
        insert = types.TextEdit(range=types.Range(end, end), new_text="\n\n" + code)
        return _document_edit(uri, insert)
    start = types.Position(0, 0)
    create = types.CreateFile(uri=uri, options=types.CreateFileOptions(ignore_if_exists=True))
    insert = types.TextEdit(range=types.Range(start, start), new_text=code)
    return types.WorkspaceEdit(document_changes=[create, _text_edit(uri, insert)])


def _root_of(path: Path, relative: str) -> Path:
    """The repository root, from a file and its path relative to that root."""
    return Path(*path.parts[: len(path.parts) - len(Path(relative).parts)])


def _test_file_for(root: Path, source: Path) -> Path:
    folder = root / "tests" if (root / "tests").is_dir() else source.parent
    return folder / f"test_{source.stem}.py"


def _example_tests(root: Path, test_file: Path) -> str:
    """The beginning of an existing test file: the target itself, else another one nearby."""
    candidates = [test_file, *sorted(test_file.parent.glob("test_*.py"))[:20]]
    for candidate in candidates:
        if candidate.is_file() and candidate.resolve().is_relative_to(root.resolve()):
            lines = candidate.read_text(encoding="utf-8", errors="replace").split("\n")
            return "\n".join(lines[:EXAMPLE_LINES])
    return ""


def _text_edit(uri: str, edit: types.TextEdit) -> types.TextDocumentEdit:
    return types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
        edits=[edit],
    )


def _document_edit(uri: str, edit: types.TextEdit) -> types.WorkspaceEdit:
    return types.WorkspaceEdit(document_changes=[_text_edit(uri, edit)])


def _syntax_errors(text: str, path: str) -> int:
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


def _edit(uri: str, where: types.Range, text: str) -> types.WorkspaceEdit:
    return types.WorkspaceEdit(changes={uri: [types.TextEdit(range=where, new_text=text)]})
