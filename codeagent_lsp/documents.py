"""pygls's open documents on LSP's line model (`codeagent_lsp.lines`), keyed by one normal form
of their URI (`codeagent_lsp.security.fileuri`).

pygls 2.1.1's `TextDocument.lines` is `source.splitlines(True)`, which also ends lines at form
feed, vertical tab, `\\x1c`-`\\x1e`, `\\x85`, U+2028 and U+2029: an incremental edit after such a
character lands on another line and the server's copy drifts from the editor's. Its position
codec also clamps a character past the end of a last line to one before it. Here an edit's
range is converted with LSP's rules and applied to the text as one slice; a range whose start
comes after its end is taken with its ends swapped, as vscode-languageserver-textdocument's
`getWellformedRange` takes it (pygls would insert at the start and delete nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import PositionCodec, TextDocument, Workspace

from codeagent_lsp import lines
from codeagent_lsp.security.fileuri import document_key


class LspPositionCodec(PositionCodec):
    """pygls's codec, counting a string's units at C speed (`lines.UNITS`)."""

    def client_num_units(self, string: str) -> int:
        encoding = getattr(self.encoding, "value", self.encoding)  # an enum or its string
        return lines.UNITS.get(str(encoding), lines.utf16_units)(string)


class LspTextDocument(TextDocument):
    """A pygls document whose lines, offsets and edits follow LSP's line model."""

    @property
    def lines(self) -> Sequence[str]:
        return tuple(lines.split_lines(self.source, keepends=True))

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        source = self.source
        units = self.position_codec.client_num_units
        start, end = sorted(
            lines.to_offset(source, p.line, p.character, units)
            for p in (change.range.start, change.range.end)
        )
        self._source = source[:start] + change.text + source[end:]


class LspWorkspace(Workspace):
    """pygls's workspace, creating `LspTextDocument`s and keying open documents and folders by
    the normal form of their URI (`fileuri.document_key`), so that any spelling of a URI finds
    them; pygls keys them by the URI with its escapes decoded, so `file://localhost/a.py` or a
    folder removed in another spelling than it was added would be missed. A document keeps the
    URI it was opened with (`TextDocument.uri`): replies name it that way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position_codec = LspPositionCodec(self._position_encoding)

    def _create_text_document(
        self,
        doc_uri: str,
        source: str | None = None,
        version: int | None = None,
        language_id: str | None = None,
    ) -> TextDocument:
        return LspTextDocument(
            doc_uri,
            source=source,
            version=version,
            language_id=language_id,
            sync_kind=self._sync_kind,
            position_codec=self._position_codec,
        )

    def put_text_document(
        self, text_document: types.TextDocumentItem, notebook_uri: str | None = None
    ) -> None:
        super().put_text_document(text_document, notebook_uri)
        document = self._text_documents.pop(unquote(text_document.uri))
        self._text_documents[document_key(text_document.uri)] = document

    def get_text_document(self, doc_uri: str) -> TextDocument:
        found = self._text_documents.get(document_key(doc_uri))
        return found if found is not None else self._create_text_document(doc_uri)

    def remove_text_document(self, doc_uri: str) -> None:
        super().remove_text_document(doc_uri)
        self._text_documents.pop(document_key(doc_uri), None)

    def update_text_document(
        self,
        text_doc: types.VersionedTextDocumentIdentifier,
        change: types.TextDocumentContentChangeEvent,
    ) -> None:
        document = self._text_documents[document_key(text_doc.uri)]
        document.apply_change(change)
        document.version = text_doc.version

    def add_folder(self, folder: types.WorkspaceFolder) -> None:
        self._folders[document_key(folder.uri)] = folder

    def remove_folder(self, folder_uri: str) -> None:
        self._folders.pop(document_key(folder_uri), None)


def use_lsp_workspace(workspace: Workspace) -> None:
    """Make the workspace pygls created at `initialize` an LspWorkspace. pygls builds it inside
    its own `initialize` handler with no hook for the class, so the class of that object is
    switched (LspWorkspace adds no state); the folders it already holds are keyed again."""
    workspace.__class__ = LspWorkspace
    workspace._position_codec = LspPositionCodec(workspace._position_encoding)
    folders = list(workspace.folders.values())
    workspace.folders.clear()
    for folder in folders:
        workspace.add_folder(folder)


EDIT_OFF_LOOP_CHARS = 1_000_000
"""A didChange whose changes times its document's length exceeds this is applied off the event
loop: each change copies and scans the document (a 4 MB line, or a thousand edits at once)."""


def heavy_edit(find: Callable[[str], TextDocument | None], message: dict[str, Any]) -> bool:
    """Is `message` (a decoded JSON-RPC message) a didChange whose application is heavy?
    `find`: the open document of a URI, or None."""
    params = message.get("params")
    if message.get("method") != types.TEXT_DOCUMENT_DID_CHANGE or not isinstance(params, dict):
        return False
    document, changes = params.get("textDocument"), params.get("contentChanges")
    uri = document.get("uri") if isinstance(document, dict) else None
    if not isinstance(uri, str) or not isinstance(changes, list):
        return False
    found = find(uri)
    return found is not None and len(found.source) * len(changes) > EDIT_OFF_LOOP_CHARS


def squash_edits(find: Callable[[str], TextDocument | None], notification: Any) -> Any:
    """A didChange notification whose changes are applied to a copy of its document, turned
    into one whole-text change: pygls then only stores the text (run off the event loop, while
    the client's later messages wait). Other messages are returned as they are. `find`: the
    open document of a URI, or None."""
    params = getattr(notification, "params", None)
    if not isinstance(params, types.DidChangeTextDocumentParams):
        return notification
    document = find(params.text_document.uri)
    if document is None:
        return notification
    copy = LspTextDocument(
        document.uri,
        source=document.source,
        sync_kind=types.TextDocumentSyncKind.Incremental,
        position_codec=document.position_codec,
    )
    for change in params.content_changes:
        copy.apply_change(change)
    params.content_changes = [types.TextDocumentContentChangeWholeDocument(text=copy.source)]
    return notification
