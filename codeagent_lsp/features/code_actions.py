"""Code actions: "Explain this code", "Add docstring", "Generate tests" and "Fix: <message>".

The list comes back at once with no model call; the model runs in `codeAction/resolve`, with a
`$/progress` report, and cancelling the request stops it. Explanations are written as Markdown
files in the cache folder and opened with `window/showDocument` (a read-only document in
VS Code and Neovim alike); clients without showDocument get `window/showMessage`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidRequest
from pygls.workspace import TextDocument

from codeagent_lsp import lines
from codeagent_lsp.actions import pipeline, testgen
from codeagent_lsp.assistant import ModelUnavailable
from codeagent_lsp.codegraph.extract import CodeAtLine, code_at, code_key
from codeagent_lsp.features.next_edits import NextEdits
from codeagent_lsp.security import fileuri
from codeagent_lsp.security.feature import Feature
from codeagent_lsp.server import CodeagentServer, document_path, prompt_location


def register(server: CodeagentServer) -> None:
    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[
                types.CodeActionKind.QuickFix,
                types.CodeActionKind.Refactor,
                types.CodeActionKind.RefactorRewrite,
                types.CodeActionKind.Source,  # VS Code lists undeclared kinds nowhere
            ],
            resolve_provider=True,
        ),
    )
    async def code_action(
        ls: CodeagentServer, params: types.CodeActionParams
    ) -> list[types.CodeAction]:
        document = ls.open_document(params.text_document.uri)
        if ls.workspace.folders and prompt_location(ls, document)[0] is None:
            # Actions send the file and its neighbours to the model: workspace files only.
            raise JsonRpcInvalidRequest(f"{document.uri} is outside the workspace folders")
        # Rows and the code at the line grow with the document: off the loop every client
        # shares, on this client's heavy lane.
        path, wanted = str(document_path(document)), _lines_of(params)
        rows, target = await ls.off_loop(_rows_and_code, document.source, path, wanted, heavy=True)
        return _code_actions(ls, params, rows, target)

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def resolve(ls: CodeagentServer, action: types.CodeAction) -> types.CodeAction:
        data: dict[str, Any] = _plain(action.data)
        token = await _begin(ls, action.title)
        try:
            if data["action"] == Feature.EXPLAIN:
                await _explain(ls, data)
            elif data["action"] == Feature.DOCSTRING:
                action.edit = await _docstring(ls, data)
            elif data["action"] == Feature.FIX:
                action.edit = await _fix(ls, data)
            elif data["action"] == Feature.TESTS:
                action.edit = await _tests(ls, data)
            elif data["action"] == Feature.NEXTEDIT and (edits := ls.part(NextEdits)) is not None:
                action.edit = await edits.resolve(data)
        except ModelUnavailable as exc:
            ls.tell_problem(str(exc))
        finally:
            if token:
                ls.work_done_progress.end(token, types.WorkDoneProgressEnd())
        return action


def _lines_of(params: types.CodeActionParams) -> list[int]:
    """The LSP lines an action list names: its range's, then each diagnostic's."""
    ranges = [params.range, *(d.range for d in params.context.diagnostics)]
    return [line for r in ranges for line in (r.start.line, r.end.line)]


def _rows_and_code(source: str, path: str, wanted: list[int]) -> tuple[dict[int, int], CodeAtLine]:
    """Each LSP line in `wanted` clamped to the document's lines (the pipeline, the CodeGraph
    and `code_at` count rows on LSP's lines too), and the code at the first one."""
    last = lines.line_count(source) - 1
    rows = {line: min(max(line, 0), last) for line in wanted}
    return rows, code_at(source, path, rows[wanted[0]])


def _code_actions(
    ls: CodeagentServer,
    params: types.CodeActionParams,
    rows: dict[int, int],
    target: CodeAtLine,
) -> list[types.CodeAction]:
    """The actions on offer at the request's range, `rows` by LSP line (`_rows_and_code`),
    `target` the code at its first line."""
    line = rows[params.range.start.line]
    # The action's data is ours: it holds LSP lines, as the pipeline counts them.
    data = {
        "uri": params.text_document.uri,
        "line": line,
        "end": rows[params.range.end.line],
    }
    actions = [_action("Explain this code", types.CodeActionKind.Refactor, Feature.EXPLAIN, data)]
    if target.name:
        actions.append(
            _action(
                f"Add docstring to {target.name}",
                types.CodeActionKind.RefactorRewrite,
                Feature.DOCSTRING,
                data,
            )
        )
    if target.name and target.language in testgen.STYLES:
        actions.append(
            _action(
                f"Generate tests for {target.name}",
                types.CodeActionKind.Source,
                Feature.TESTS,
                data,
            )
        )
    if (edits := ls.part(NextEdits)) is not None:
        actions += edits.actions(params.text_document.uri, params.range)
    for diagnostic in params.context.diagnostics:
        if diagnostic.source == "codeagent":
            continue  # a next edit: its quickfix is above
        fix = {
            **data,
            "line": rows[diagnostic.range.start.line],
            "end": rows[diagnostic.range.end.line],
            "message": diagnostic.message,
        }
        actions.append(
            _action(
                f"Fix: {diagnostic.message[:80]}",
                types.CodeActionKind.QuickFix,
                Feature.FIX,
                fix,
            )
        )
    return actions


def _action(title: str, kind: str, name: str, data: dict[str, Any]) -> types.CodeAction:
    return types.CodeAction(title=title, kind=kind, data={**data, "action": name})


def _heavy(ls: CodeagentServer) -> pipeline.Run:
    """How the pipeline runs its steps that grow with the document: on the client's heavy
    lane (`CodeagentServer.heavy_lane`), not the loop's default executor all clients share."""
    return functools.partial(ls.off_loop, heavy=True)


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
    title, markdown = await pipeline.explain(
        ls.assistant,
        ls.codegraph,
        document_path(document),
        document.source,
        data["line"],
        "explain:" + data["uri"],
        selection_end=data.get("end"),
        run=_heavy(ls),
    )
    path = str(document_path(document))
    explained = (await ls.off_loop(code_at, document.source, path, data["line"], heavy=True)).code
    ls.explanations[(path, code_key(explained))] = markdown
    window = ls.client_capabilities.window
    if window and window.show_document and window.show_document.support:
        shown = _explanation_file(document.uri, title)
        shown.write_text(markdown, encoding="utf-8")
        await ls.window_show_document_async(
            types.ShowDocumentParams(uri=fileuri.uri_of(shown), take_focus=False)
        )
    else:
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Info, markdown))


def _explanation_file(uri: str, title: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "codeagent-lsp" / "explanations"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{uri}#{title}".encode()).hexdigest()[:10]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", title)
    return folder / f"{safe}-{digest}.md"


async def _docstring(ls: CodeagentServer, data: dict[str, Any]) -> types.WorkspaceEdit | None:
    document = ls.open_document(data["uri"])
    edit = await pipeline.docstring(
        ls.assistant,
        document_path(document),
        document.source,
        data["line"],
        "docstring:" + data["uri"],
        _heavy(ls),
    )
    return _workspace_edit(data["uri"], document, edit) if edit else None


async def _fix(ls: CodeagentServer, data: dict[str, Any]) -> types.WorkspaceEdit | None:
    document = ls.open_document(data["uri"])
    edit = await pipeline.fix(
        ls.assistant,
        document_path(document),
        document.source,
        data["line"],
        data["end"],
        data["message"],
        "fix:" + data["uri"],
        _heavy(ls),
    )
    return _workspace_edit(data["uri"], document, edit) if edit else None


async def _tests(ls: CodeagentServer, data: dict[str, Any]) -> types.WorkspaceEdit | None:
    """Creates the test file, or extends the one the project already has (for Rust, the
    source file's own tests module); says so when the model's tests do not parse."""
    document = ls.open_document(data["uri"])
    path = document_path(document)
    _, relative = prompt_location(ls, document)
    root = Path(*path.parts[: len(path.parts) - len(Path(relative).parts)])
    proposal = await pipeline.tests(
        ls.assistant,
        root,
        path,
        document.source,
        data["line"],
        "tests:" + data["uri"],
        ls.codegraph,
        _heavy(ls),
    )
    if proposal is None:
        ls.window_show_message(
            types.ShowMessageParams(
                types.MessageType.Warning,
                "codeagent: the generated tests did not parse; nothing was changed.",
            )
        )
        return None
    uri = ls.uri_for(proposal.plan.file)
    points = lines.Points(proposal.existing or "", ls.workspace.position_codec.client_num_units)
    edits = []
    for insertion in proposal.insertions:  # a row past the last is the end of the file
        at = types.Position(*points.position(insertion.line, 0))
        edits.append(types.TextEdit(range=types.Range(at, at), new_text=insertion.text))
    if proposal.existing is not None:
        return types.WorkspaceEdit(document_changes=[_text_edit(uri, edits)])
    create = types.CreateFile(uri=uri, options=types.CreateFileOptions(ignore_if_exists=True))
    return types.WorkspaceEdit(document_changes=[create, _text_edit(uri, edits)])


def _text_edit(uri: str, edits: list[types.TextEdit]) -> types.TextDocumentEdit:
    return types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
        edits=edits,
    )


def _workspace_edit(
    uri: str, document: TextDocument, edit: pipeline.LineEdit
) -> types.WorkspaceEdit:
    """A line edit as LSP: an insertion before a row, or a replacement of whole rows, with
    positions on LSP's lines in the client's encoding."""
    text = document.source
    points = lines.Points(text, document.position_codec.client_num_units)
    start = types.Position(*points.position(edit.first, 0))
    if edit.last < edit.first:
        change = types.TextEdit(range=types.Range(start, start), new_text=edit.text + "\n")
    else:
        end = types.Position(*points.position(edit.last, len(text)))  # the row's end
        change = types.TextEdit(range=types.Range(start, end), new_text=edit.text)
    return types.WorkspaceEdit(changes={uri: [change]})
