"""`textDocument/inlineCompletion` (ghost text) and `textDocument/completion` (the popup)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from lsprotocol import types
from pygls.workspace import TextDocument

from codeagent_lsp.assistant import ModelUnavailable, PromptFile, Suggestion
from codeagent_lsp.codegraph import words
from codeagent_lsp.engine.llama import EngineError
from codeagent_lsp.security import fileuri
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


def warm(ls: CodeagentServer, uri: str, position: Any = None) -> None:
    """Evaluate `uri`'s prompt at `position` (the end of the document when the client sent
    none) in the background, replacing any other warm-up; nothing when completion is off, the
    document is not served or the policy denies completion on it."""
    ls.stop_warming()
    document = ls.document(uri)
    options = ls.settings.completion
    if document is None or not (options.enabled and options.warm) or ls.document_refusal(uri):
        return
    repo, path = prompt_location(ls, document)
    if not ls.policy.decide(ls.identity, "completion", repo, path).allowed:
        return
    try:
        offset = offset_of(document, position) if position is not None else len(document.source)
    except Exception:  # a notification has no reply: a bad position warms nothing
        return
    where = PromptFile(repo, path, document_path(document))
    key, text = fileuri.document_key(uri), document.source
    ls.warming = asyncio.get_running_loop().create_task(_warm(ls, key, text, offset, where))


async def _warm(ls: CodeagentServer, key: str, text: str, offset: int, where: PromptFile) -> None:
    with contextlib.suppress(ModelUnavailable, EngineError):  # the next request tells the user
        await ls.assistant.warm(key, text, offset, where)


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
        if ls.next_edits is not None and ls.settings.completion.enabled:
            edit = await ls.next_edits.inline_item(uri, params.position)
            if edit is not None:  # a flagged line: its next edit, replacing the old text
                return types.InlineCompletionList(items=[edit])
        suggestion, offset = await _suggest(ls, params.text_document.uri, params.position)
        if suggestion is None:
            return types.InlineCompletionList(items=[])
        cursor = position_of(ls.open_document(params.text_document.uri), offset)
        here = types.Range(cursor, cursor)
        return types.InlineCompletionList(
            items=[types.InlineCompletionItem(insert_text=suggestion.text, range=here)]
        )

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
        return types.CompletionList(
            is_incomplete=True, items=[_popup_item(document, offset, suggestion)]
        )


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
