"""`textDocument/inlineCompletion` (ghost text) and `textDocument/completion` (the popup)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from lsprotocol import types
from pygls.workspace import TextDocument

from codeagent_lsp.assistant import ModelUnavailable, PromptFile, Suggestion
from codeagent_lsp.codegraph import words
from codeagent_lsp.engine.llama import EngineError
from codeagent_lsp.features.next_edits import NextEdits
from codeagent_lsp.security import fileuri
from codeagent_lsp.security.feature import Feature
from codeagent_lsp.server import (
    CodeagentServer,
    document_path,
    offset_of,
    position_of,
    prompt_location,
)

DID_FOCUS = "codeagent/didFocus"
"""Notification from the editor integrations: {textDocument: {uri}, position?}, sent when a
document becomes active or its cursor settles, so its prompt is warmed there."""


ACCEPTED = "codeagent.accepted"
"""workspace/executeCommand once a suggestion is accepted, arguments [uri]: every suggestion
carries it as its command, which VS Code and Neovim 0.12 run after inserting it."""


def warm(ls: CodeagentServer, uri: str, position: Any = None) -> None:
    """Evaluate `uri`'s prompt at `position` (the end of the document when the client sent
    none) in the background, replacing any other warm-up; at a position the client sent (its
    cursor settled there) the suggestion itself is computed too (`Assistant.warm`). Nothing
    when completion is off, the document is not served or the policy denies completion on it,
    and nothing either where a prefetch runs (it evaluates that prompt, and more: the editors
    report the cursor an accept moved)."""
    key, document = fileuri.document_key(uri), ls.document(uri)
    offset = _offset(document, position)
    if document and offset is not None and ls.assistant.prefetching(key, document.source, offset):
        return
    ls.stop_warming()
    target = _background_target(ls, uri, ls.settings.completion.warm)
    if target is None or offset is None:
        return
    work = ls.assistant.warm(
        key, target[0].source, offset, target[1], at_cursor=position is not None
    )
    ls.warming = asyncio.get_running_loop().create_task(_background(work))


def _offset(document: TextDocument | None, position: Any) -> int | None:
    """The offset of a notification's position (the end of the document without one); None for
    a bad position (a notification has no reply) or no document."""
    if document is None:
        return None
    try:
        return offset_of(document, position) if position is not None else len(document.source)
    except Exception:
        return None


def prefetch_after_accept(ls: CodeagentServer, uri: str, *, changed: bool = False) -> bool:
    """Compute, in the background, the suggestion that follows the document's last one once
    it is accepted, in place of any other background work; `changed`: only when the document
    now holds it accepted (else it may be on its way: an accept command before its change).
    Whether a prefetch runs there now (one already running is kept)."""
    key, document = fileuri.document_key(uri), ls.document(uri)
    if document is None:
        return False
    after = ls.assistant.after_accept(key, document.source)
    if after is None or (changed and after[0] != document.source):
        return False
    text, offset = after
    if ls.assistant.prefetching(key, text, offset):
        return True
    ls.stop_warming()
    target = _background_target(ls, uri, ls.settings.completion.prefetch)
    if target is None:
        return False
    work = ls.assistant.prefetch(key, text, offset, target[1])
    ls.warming = asyncio.get_running_loop().create_task(_background(work))
    return True


def text_changed(ls: CodeagentServer, uri: str) -> None:
    """A keystroke stops the background work in every document (its request comes first),
    unless it accepted the last suggestion: then the next one is prefetched."""
    if not prefetch_after_accept(ls, uri, changed=True):
        ls.stop_warming()


def _background_target(
    ls: CodeagentServer, uri: str, enabled: bool
) -> tuple[TextDocument, PromptFile] | None:
    """The document and its prompt location when background work may run on it: `enabled`,
    completion on, the document served and completion allowed on it by the policy."""
    document = ls.document(uri)
    if document is None or not (enabled and ls.settings.completion.enabled):
        return None
    if ls.document_refusal(uri):
        return None
    repo, path = prompt_location(ls, document)
    if not ls.policy.decide(ls.identity, Feature.COMPLETION, repo, path).allowed:
        return None
    return document, PromptFile(repo, path, document_path(document))


async def _background(work: Awaitable[object]) -> None:
    with contextlib.suppress(ModelUnavailable, EngineError):  # the next request tells the user
        await work


async def _suggest(
    ls: CodeagentServer, uri: str, position: types.Position
) -> tuple[Suggestion | None, int]:
    document = ls.open_document(uri)
    offset = offset_of(document, position)
    if not ls.settings.completion.enabled:
        return None, offset
    try:
        repo, path = prompt_location(ls, document)
        where = PromptFile(repo, path, document_path(document))
        key = fileuri.document_key(uri)
        suggestion = await ls.assistant.complete(key, document.source, offset, where)
    except ModelUnavailable as exc:
        ls.tell_problem(str(exc))
        return None, offset
    return (suggestion if suggestion.text else None), offset


def register(server: CodeagentServer) -> None:
    @server.command(ACCEPTED)
    def accepted(ls: CodeagentServer, *arguments: Any) -> None:
        uri = arguments[0] if arguments else None
        if isinstance(uri, str):
            prefetch_after_accept(ls, uri)

    @server.feature(DID_FOCUS)
    def did_focus(ls: CodeagentServer, params: Any) -> None:
        document = getattr(params, "textDocument", None)
        uri = getattr(document, "uri", None)
        if isinstance(uri, str):
            position = getattr(params, "position", None)
            warm(ls, uri, _position(position) if position is not None else None)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: CodeagentServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        uri = params.text_document.uri
        edits = ls.part(NextEdits)
        if edits is not None and ls.settings.completion.enabled:
            edit = await edits.inline_item(uri, params.position)
            if edit is not None:  # a flagged line: its next edit, replacing the old text
                return types.InlineCompletionList(items=[edit])
        suggestion, offset = await _suggest(ls, params.text_document.uri, params.position)
        if suggestion is None:
            return types.InlineCompletionList(items=[])
        uri = params.text_document.uri
        cursor = position_of(ls.open_document(uri), offset)
        here = types.Range(cursor, cursor)
        item = types.InlineCompletionItem(suggestion.text, range=here, command=_accepted(uri))
        return types.InlineCompletionList(items=[item])

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=[".", "(", " "], resolve_provider=False),
    )
    async def completion(
        ls: CodeagentServer, params: types.CompletionParams
    ) -> types.CompletionList:
        suggestion, offset = await _suggest(ls, params.text_document.uri, params.position)
        if suggestion is None:
            return types.CompletionList(is_incomplete=True, items=[])
        document = ls.open_document(params.text_document.uri)
        item = _popup_item(document, offset, suggestion)
        item.command = _accepted(params.text_document.uri)
        return types.CompletionList(is_incomplete=True, items=[item])


def _accepted(uri: str) -> types.Command:
    return types.Command("codeagent: suggestion accepted", ACCEPTED, arguments=[uri])


def _position(value: Any) -> types.Position | None:
    line, character = getattr(value, "line", None), getattr(value, "character", None)
    if isinstance(line, int) and isinstance(character, int) and line >= 0 and character >= 0:
        return types.Position(line, character)
    return None


def _popup_item(
    document: TextDocument, offset: int, suggestion: Suggestion
) -> types.CompletionItem:
    """The popup filters items by the word before the cursor, so the edit starts at that word
    and repeats it: the range is in the client's position encoding, like every position."""
    start_offset = words.word_start(document.source, offset)
    word = document.source[start_offset:offset]
    start = position_of(document, start_offset)
    end = position_of(document, offset)
    new_text = word + suggestion.text
    first_line = new_text.split("\n", 1)[0]
    return types.CompletionItem(
        label=first_line.strip() or new_text.strip(),
        kind=types.CompletionItemKind.Text,
        detail="codeagent",
        documentation=types.MarkupContent(types.MarkupKind.Markdown, f"```\n{new_text}\n```"),
        filter_text=new_text,
        sort_text="0",
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=types.Range(start, end), new_text=new_text),
    )
