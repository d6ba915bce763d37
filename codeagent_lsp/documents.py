"""pygls's open documents on LSP's line model (`codeagent_lsp.lines`).

pygls 2.1.1's `TextDocument.lines` is `source.splitlines(True)`, which also ends lines at form
feed, vertical tab, `\\x1c`-`\\x1e`, `\\x85`, U+2028 and U+2029: an incremental edit after such a
character lands on another line and the server's copy drifts from the editor's. Its position
codec also clamps a character past the end of a last line to one before it. Here an edit's
range is converted with LSP's rules and applied to the text as one slice.
"""

from __future__ import annotations

from collections.abc import Sequence

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from codeagent_lsp import lines


class LspTextDocument(TextDocument):
    """A pygls document whose lines, offsets and edits follow LSP's line model."""

    @property
    def lines(self) -> Sequence[str]:
        return tuple(lines.split_lines(self.source, keepends=True))

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        source = self.source
        units = self.position_codec.client_num_units
        start, end = (
            lines.to_offset(source, p.line, p.character, units)
            for p in (change.range.start, change.range.end)
        )
        self._source = source[:start] + change.text + source[max(start, end) :]


class LspWorkspace(Workspace):
    """pygls's workspace, creating `LspTextDocument`s."""

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


def use_lsp_lines(workspace: Workspace) -> None:
    """Make the workspace pygls created at `initialize` create LSP-line documents. pygls builds
    it inside its own `initialize` handler with no hook for the document class, so the class
    of that object is switched (LspWorkspace adds no state)."""
    workspace.__class__ = LspWorkspace
