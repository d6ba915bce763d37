"""Next edits: when a definition in an open document changes in a way that propagates (see
codegraph/changes), every use it affects gets a Hint diagnostic (source `codeagent`) and a
quickfix; the changed document gets "Update all N uses of NAME" (a source action whose edit
needs confirmation); inline completion on a flagged line returns that place's edit as a range
replacement. `textDocument/rename` and `prepareRename` come from the same graph.

Detection runs after the CodeGraph indexed an open document's text, so it waits for the same
pause in typing (features/indexing DEBOUNCE_S). Every place passes the policy (feature
`nextedit`, which sends the place's code to the model for a call's rewrite), so a file the
policy denies is never flagged or edited.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from codeagent_lsp import nextedits
from codeagent_lsp.codegraph.changes import Change, ChangeTracker, Signature
from codeagent_lsp.codegraph.languages import language_for
from codeagent_lsp.codegraph.words import word_at, word_start
from codeagent_lsp.codegraph.workspace import Location, WorkspaceIndex
from codeagent_lsp.features.navigation import Locations
from codeagent_lsp.nextedits import Finder, Site
from codeagent_lsp.security import audit, fileuri
from codeagent_lsp.security.feature import Feature
from codeagent_lsp.server import CodeagentServer, document_path, offset_of, position_of

"""The policy feature and the code action's name."""
ANNOTATION = "codeagent-next-edits"
_IDENTIFIER = re.compile(r"^[A-Za-z_$][\w$]*$")


class NextEdits:
    def __init__(self, server: CodeagentServer) -> None:
        self.server = server
        self.tracker = ChangeTracker()
        self._finder: Finder | None = None
        self._published: dict[str, list[tuple[Site, types.Range]]] = {}
        self._lock = asyncio.Lock()

    # --- detection ------------------------------------------------------------------------------

    async def document_indexed(self, uri: str, text: str) -> None:
        """The CodeGraph holds `text` for `uri` now: compare its definitions with the baseline
        and flag the places of its changes (and re-check those of other documents' changes,
        which this text may have updated)."""
        ls = self.server
        path = fileuri.path_of(uri)
        language = language_for(path) if path is not None else None
        if not ls.settings.nextEdits.enabled or path is None or language is None:
            return
        source = text.encode("utf-8", errors="surrogatepass")
        index = ls.codegraph
        tree = index.live.tree(str(path), source) if index is not None else None
        update = self.tracker.update
        found = await ls.off_loop(update, str(path), source, language, tree, heavy=True)
        if found:
            self._audit(Path(path))
        await self.refresh()

    async def document_opened(self, uri: str, text: str) -> None:
        """The text a document opens with is the baseline its changes are measured from. It
        parses the whole document, so it runs on the client's heavy lane, whose order of
        arrival puts it before the first `document_indexed` (which waits for a pause)."""
        path = fileuri.path_of(uri)
        language = language_for(path) if path is not None else None
        if path is not None and language is not None:
            await self.server.off_loop(self._track, str(path), text, language, heavy=True)

    def _track(self, path: str, text: str, language: str) -> list[Change] | None:
        return self.tracker.update(path, text.encode("utf-8", errors="surrogatepass"), language)

    async def document_closed(self, uri: str) -> None:
        if self.tracker.forget(str(fileuri.path_of(uri))):
            await self.refresh()

    def _audit(self, path: Path) -> None:
        ls = self.server
        located = ls.codegraph.locate(path) if ls.codegraph is not None else None
        repository, relative = located or (None, path.name)
        ls.audit.record(audit.new_row(ls.identity, Feature.NEXTEDIT, repository, relative))

    async def refresh(self) -> None:
        """Find the places of every open document's changes and publish them; places no
        longer affected (updated, or the change undone) are cleared."""
        index = self.server.codegraph
        if index is None:
            return
        async with self._lock:
            sites = await self.server.off_loop(self._all_sites, index, heavy=True)
            self._publish(sites)

    def finder(self, index: WorkspaceIndex) -> Finder:
        if self._finder is None or self._finder.index is not index:
            self._finder = Finder(index, self.server.open_text, self._allowed)
        return self._finder

    def _allowed(self, repository: str, path: str) -> bool:
        ls = self.server
        return ls.policy.decide(ls.identity, Feature.NEXTEDIT, repository, path).allowed

    def _all_sites(self, index: WorkspaceIndex) -> list[tuple[Site, types.Location]]:
        finder = self.finder(index)
        limit = self.server.settings.nextEdits.maxSites
        found: list[Site] = []
        kept = set()
        for key, changes in self.tracker.changes().items():
            where = index.locate(Path(key))
            if where is None or not self._allowed(*where):
                continue
            for change in changes:
                kept.add((*where, f"{change.kind}:{change.old.qualified_name}"))
                found += finder.sites(change, where)
        finder.forget(kept)
        convert = Locations(self.server)
        return [(site, convert(_location(site))) for site in found[:limit]]

    def _publish(self, sites: list[tuple[Site, types.Location]]) -> None:
        by_uri: dict[str, list[tuple[Site, types.Range]]] = {}
        for site, location in sites:
            by_uri.setdefault(location.uri, []).append((site, location.range))
        for uri in self._published.keys() | by_uri.keys():
            placed = by_uri.get(uri, [])
            if not placed and not self._published.get(uri):
                continue
            diagnostics = [_diagnostic(site, where) for site, where in placed]
            self.server.text_document_publish_diagnostics(
                types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics)
            )
        self._published = by_uri

    # --- code actions ---------------------------------------------------------------------------

    def actions(self, uri: str, lines: types.Range) -> list[types.CodeAction]:
        """Quickfixes for the flagged places on `lines` of `uri`; in a document whose
        definitions changed, one "Update all N uses" per change."""
        found = []
        for site, where in self._sites_of(uri):
            if where.start.line <= lines.end.line and where.end.line >= lines.start.line:
                found.append(self._quickfix(uri, site, where))
        for change in self.tracker.changes().get(str(fileuri.path_of(uri)), []):
            count = sum(1 for s, _ in self._all_published() if _same(s.change, change))
            if count:
                found.append(
                    types.CodeAction(
                        title=f"Update all {count} uses of `{change.name}`",
                        kind=types.CodeActionKind.Source,
                        data={"action": Feature.NEXTEDIT, "uri": uri, "change": _change_id(change)},
                    )
                )
        return found

    def _quickfix(self, uri: str, site: Site, where: types.Range) -> types.CodeAction:
        title = _fix_title(site)
        action = types.CodeAction(
            title=title,
            kind=types.CodeActionKind.QuickFix,
            diagnostics=[_diagnostic(site, where)],
            is_preferred=True,
            data={
                "action": Feature.NEXTEDIT,
                "uri": uri,
                "line": where.start.line,
                "col": where.start.character,
            },
        )
        if site.new_text is not None:  # written without the model: no need to resolve
            action.edit = types.WorkspaceEdit(changes={uri: [types.TextEdit(where, site.new_text)]})
        return action

    async def resolve(self, data: dict[str, Any]) -> types.WorkspaceEdit | None:
        """The edit of one place (`line`, `col`), or of every place of a change (`change`),
        with the model writing what a changed signature needs; places whose rewrite does not
        check out are left as they are, and the user is told how many."""
        if "change" in data:
            chosen = [
                (s, w) for s, w in self._all_published() if _change_id(s.change) == data["change"]
            ]
        else:
            chosen = [
                (s, w)
                for s, w in self._sites_of(data["uri"])
                if (w.start.line, w.start.character) == (data.get("line"), data.get("col"))
            ]
        edits = await self._write(chosen)
        missed = len(chosen) - sum(len(e) for e in edits.values())
        if missed:
            self.server.window_show_message(
                types.ShowMessageParams(
                    types.MessageType.Warning,
                    f"codeagent: {missed} of {len(chosen)} uses could not be rewritten to fit "
                    "the new definition; they are left as they are.",
                )
            )
        if not edits:
            return None
        if "change" not in data:
            return types.WorkspaceEdit(changes=edits)
        return _confirmed(edits, chosen[0][0])

    async def _write(
        self, chosen: list[tuple[Site, types.Range]]
    ) -> dict[str, list[types.TextEdit]]:
        ls = self.server
        edits: dict[str, list[types.TextEdit]] = {}
        for site, where in chosen:
            uri = ls.uri_for(site.file)
            text = ls.open_text(site.file)
            if text is None:
                text = await asyncio.to_thread(_read, site.file)
            if text is None or _overlaps(where, edits.get(uri, [])):
                continue
            new_text = await nextedits.write_call(ls.assistant, site, text, f"nextedit:{uri}")
            if new_text is not None:
                edits.setdefault(uri, []).append(types.TextEdit(where, new_text))
        return edits

    async def inline_item(
        self, uri: str, position: types.Position
    ) -> types.InlineCompletionItem | None:
        """A flagged place on the cursor's line: its edit, replacing the old text."""
        for site, where in self._sites_of(uri):
            if where.start.line == position.line:
                edits = await self._write([(site, where)])
                for edit in edits.get(uri, []):
                    return types.InlineCompletionItem(insert_text=edit.new_text, range=edit.range)
        return None

    def _sites_of(self, uri: str) -> list[tuple[Site, types.Range]]:
        return self._published.get(self.server.uri_for(fileuri.path_of(uri) or uri), [])

    def _all_published(self) -> Iterable[tuple[Site, types.Range]]:
        for placed in self._published.values():
            yield from placed

    # --- rename ---------------------------------------------------------------------------------

    def rename_sites(self, uri: str, position: types.Position, new_name: str) -> list[Site]:
        """Every place the name at `position` is written, defined or imported: the graph's
        references of that name in the file's language family, and its definitions."""
        index = self.server.codegraph
        name, path, language = self._name_at(uri, position)
        if index is None or not name:
            return []
        old = Signature(name, name, "function", language, name)
        new = Signature(new_name, new_name, "function", language, new_name)
        change = Change("rename", old, new)
        found = self.finder(index).sites(change, ("", ""))
        for symbol in index.definitions(name, path):
            location = index.symbol_location(symbol, name_only=True)
            if location is None or not self._allowed(symbol.repo, symbol.path):
                continue
            if nextedits.family(symbol.language) != nextedits.family(language):
                continue
            start, end = (location.line, location.col), (location.end_line, location.end_col)
            found.append(
                Site(symbol.repo, symbol.path, location.path, change, start, end, name, new_name)
            )
        return found

    def _name_at(self, uri: str, position: types.Position) -> tuple[str | None, Path, str]:
        document = self.server.open_document(uri)
        path = document_path(document)
        name = word_at(document.source, offset_of(document, position))
        return name, path, language_for(path) or ""

    def prepare(self, uri: str, position: types.Position) -> types.PrepareRenamePlaceholder | None:
        name, path, _ = self._name_at(uri, position)
        index = self.server.codegraph
        if not name or index is None or not index.definitions(name, path):
            return None
        document = self.server.open_document(uri)
        start = word_start(document.source, offset_of(document, position))
        where = types.Range(position_of(document, start), position_of(document, start + len(name)))
        return types.PrepareRenamePlaceholder(range=where, placeholder=name)


def _location(site: Site) -> Location:
    return Location(site.file, site.start[0], site.start[1], site.end[0], site.end[1])


def _diagnostic(site: Site, where: types.Range) -> types.Diagnostic:
    return types.Diagnostic(
        range=where,
        message=site.message,
        severity=types.DiagnosticSeverity.Hint,
        source="codeagent",
        code=Feature.NEXTEDIT,
    )


def _fix_title(site: Site) -> str:
    change = site.change
    if change.kind == "rename" and change.new is not None:
        return f"Rename to `{change.new.name}`"
    if change.kind == "removed":
        return f"Import `{change.name}` from `{change.moved_to}`"
    if change.kind == "async":
        return "Await it" if change.new and change.new.is_async else "Stop awaiting it"
    return f"Update this call to the new `{change.name}`"


def _change_id(change: Change) -> str:
    return f"{change.kind}:{change.old.qualified_name}"


def _same(a: Change, b: Change) -> bool:
    return _change_id(a) == _change_id(b)


def _overlaps(where: types.Range, edits: list[types.TextEdit]) -> bool:
    def key(p: types.Position) -> tuple[int, int]:
        return p.line, p.character

    return any(
        key(where.start) < key(e.range.end) and key(e.range.start) < key(where.end) for e in edits
    )


def _confirmed(edits: dict[str, list[types.TextEdit]], site: Site) -> types.WorkspaceEdit:
    """One WorkspaceEdit for every place, each edit annotated as needing confirmation."""
    changes: list[Any] = []
    for uri, found in edits.items():
        annotated = [
            types.AnnotatedTextEdit(range=e.range, new_text=e.new_text, annotation_id=ANNOTATION)
            for e in found
        ]
        changes.append(
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
                edits=annotated,
            )
        )
    annotation = types.ChangeAnnotation(
        label=f"Update uses of `{site.change.name}`",
        needs_confirmation=True,
        description=site.message,
    )
    return types.WorkspaceEdit(
        document_changes=changes, change_annotations={ANNOTATION: annotation}
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def register(server: CodeagentServer) -> None:
    feature = NextEdits(server)
    server.attach(feature)

    @server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
    async def prepare_rename(
        ls: CodeagentServer, params: types.PrepareRenameParams
    ) -> types.PrepareRenamePlaceholder | None:
        uri, position = params.text_document.uri, params.position
        return await ls.off_loop(feature.prepare, uri, position, heavy=True)

    @server.feature(types.TEXT_DOCUMENT_RENAME, types.RenameOptions(prepare_provider=True))
    async def rename(ls: CodeagentServer, params: types.RenameParams) -> types.WorkspaceEdit | None:
        if not _IDENTIFIER.match(params.new_name):
            raise JsonRpcInvalidParams(f"codeagent: {params.new_name!r} is not a valid name")
        uri, position = params.text_document.uri, params.position
        sites = await ls.off_loop(feature.rename_sites, uri, position, params.new_name, heavy=True)
        if not sites:
            return None
        convert = Locations(ls)
        edits: dict[str, list[types.TextEdit]] = {}
        for site in sites:
            location = convert(_location(site))
            edits.setdefault(location.uri, []).append(
                types.TextEdit(location.range, params.new_name)
            )
        return types.WorkspaceEdit(changes=edits)
