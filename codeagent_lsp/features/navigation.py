"""Definition, references, document and workspace symbols, from the CodeGraph: no model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from lsprotocol import types

from codeagent_lsp import lines
from codeagent_lsp.codegraph import extract, languages
from codeagent_lsp.codegraph.model import Definition
from codeagent_lsp.codegraph.words import word_at
from codeagent_lsp.codegraph.workspace import Location, WorkspaceIndex
from codeagent_lsp.server import CodeagentServer, document_path, offset_of

log = logging.getLogger(__name__)

MAX_LOCATIONS = 1000
"""Most references one request returns: what a client can show, and a bound on the work."""
MAX_DOCUMENT_SYMBOLS = 2000
"""Most symbols of one document's outline (the first ones in the file)."""

SYMBOL_KINDS = {
    "function": types.SymbolKind.Function,
    "method": types.SymbolKind.Method,
    "class": types.SymbolKind.Class,
    "interface": types.SymbolKind.Interface,
    "struct": types.SymbolKind.Struct,
    "enum": types.SymbolKind.Enum,
    "type": types.SymbolKind.TypeParameter,
    "variable": types.SymbolKind.Variable,
    "constant": types.SymbolKind.Constant,
    "field": types.SymbolKind.Field,
    "module": types.SymbolKind.Module,
    "macro": types.SymbolKind.Constant,
    "namespace": types.SymbolKind.Namespace,
    "trait": types.SymbolKind.Interface,
    "impl": types.SymbolKind.Class,
}


def name_at(ls: CodeagentServer, uri: str, position: types.Position) -> tuple[str | None, Path]:
    document = ls.open_document(uri)
    name = word_at(document.source, offset_of(document, position))
    return name, document_path(document)


class Locations:
    """Turns CodeGraph locations (tree-sitter rows, code-point columns) into LSP ones on LSP's
    line model and in the client's position encoding, reading each target file once: from the
    editor when it is open there, else from disk (the index only holds files inside the
    workspace roots). A file open in the editor is named as the client spelled it."""

    def __init__(self, ls: CodeagentServer) -> None:
        self.ls = ls
        self._points: dict[Path, lines.Points] = {}

    def __call__(self, location: Location) -> types.Location:
        points = self._file_points(location.path)
        start = types.Position(*points.position(location.line, location.col))
        end = types.Position(*points.position(location.end_line, location.end_col))
        return types.Location(self.ls.uri_for(location.path), types.Range(start, end))

    def _file_points(self, path: Path) -> lines.Points:
        if path not in self._points:
            source = self.ls.open_text(path)
            if source is None:
                try:
                    source = path.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    source = ""
            units = self.ls.workspace.position_codec.client_num_units
            self._points[path] = lines.Points(source, units)
        return self._points[path]


def register(server: CodeagentServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    async def definition(
        ls: CodeagentServer, params: types.DefinitionParams
    ) -> list[types.Location]:
        # Off the event loop, like every step that grows with a document or the index: one
        # client's large file or index must not stall the others' requests. A lookup of one
        # name is light; references and symbol lists, which grow with the index or the
        # document, take this client's heavy lane (`CodeagentServer.heavy_lane`).
        name, path = await ls.off_loop(name_at, ls, params.text_document.uri, params.position)
        if not name or ls.codegraph is None:
            return []
        index = ls.codegraph

        def found() -> list[types.Location]:
            symbols = index.definitions(name, path)
            locations = (index.symbol_location(s, name_only=True) for s in symbols)
            convert = Locations(ls)
            return [convert(loc) for loc in locations if loc is not None]

        return await ls.off_loop(found)

    @server.feature(types.TEXT_DOCUMENT_REFERENCES)
    async def references(
        ls: CodeagentServer, params: types.ReferenceParams
    ) -> list[types.Location]:
        name, path = await ls.off_loop(name_at, ls, params.text_document.uri, params.position)
        if not name or ls.codegraph is None:
            return []
        index = ls.codegraph
        declaration = params.context.include_declaration

        def found() -> list[types.Location]:
            places = [index.reference_location(r) for r in index.references(name)[:MAX_LOCATIONS]]
            if declaration:
                symbols = index.definitions(name, path)
                places += [index.symbol_location(s, name_only=True) for s in symbols]
            convert = Locations(ls)
            return [convert(loc) for loc in places if loc]

        return await ls.off_loop(found, heavy=True)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    async def document_symbol(
        ls: CodeagentServer, params: types.DocumentSymbolParams
    ) -> list[types.DocumentSymbol]:
        document = ls.open_document(params.text_document.uri)
        language = languages.language_for(document_path(document))
        if language is None:
            return []
        text, units = document.source, document.position_codec.client_num_units
        limit = ls.settings.codegraph.maxFileBytes

        def symbols() -> list[types.DocumentSymbol]:
            source = text.encode("utf-8", errors="surrogatepass")
            if len(source) > limit:  # the CodeGraph's own bound on what is parsed
                log.info("no document symbols: %d bytes, over codegraph.maxFileBytes", len(source))
                return []
            definitions = extract.extract(source, language).definitions[:MAX_DOCUMENT_SYMBOLS]
            points = lines.Points(text, units)
            return nest(definitions, lambda r, c: types.Position(*points.position(r, c)))

        return await ls.off_loop(symbols, heavy=True)

    @server.feature(types.WORKSPACE_SYMBOL)
    async def workspace_symbol(
        ls: CodeagentServer, params: types.WorkspaceSymbolParams
    ) -> list[types.SymbolInformation]:
        if ls.codegraph is None or not params.query.strip():
            return []
        index = ls.codegraph
        return await ls.off_loop(_workspace_symbols, ls, index, params.query, heavy=True)


def _workspace_symbols(
    ls: CodeagentServer, index: WorkspaceIndex, query: str
) -> list[types.SymbolInformation]:
    """The symbols a query finds, as LSP symbols (run in a worker thread)."""
    convert = Locations(ls)
    result = []
    for symbol in index.search(query):
        location = index.symbol_location(symbol, name_only=True)
        if location is not None:
            result.append(
                types.SymbolInformation(
                    name=symbol.definition.name,
                    kind=SYMBOL_KINDS.get(symbol.definition.kind, types.SymbolKind.Variable),
                    location=convert(location),
                    container_name=symbol.definition.scope or None,
                )
            )
    return result


def nest(
    definitions: list[Definition], position: Callable[[int, int], types.Position]
) -> list[types.DocumentSymbol]:
    """Definitions as a tree by scope (a method under its class); `position` turns a line and
    code-point column into the client's encoding."""
    by_name: dict[str, types.DocumentSymbol] = {}
    roots: list[types.DocumentSymbol] = []
    for item in definitions:
        span, name_span = item.span, item.name_span
        symbol = types.DocumentSymbol(
            name=item.name,
            kind=SYMBOL_KINDS.get(item.kind, types.SymbolKind.Variable),
            range=types.Range(
                position(span.start_line, span.start_col), position(span.end_line, span.end_col)
            ),
            selection_range=types.Range(
                position(name_span.start_line, name_span.start_col),
                position(name_span.end_line, name_span.end_col),
            ),
            detail=item.signature,
            children=[],
        )
        parent = by_name.get(item.scope)
        siblings = roots if parent is None else parent.children
        assert isinstance(siblings, list)  # every symbol here is made with children=[]
        siblings.append(symbol)
        by_name.setdefault(item.qualified_name, symbol)
    return roots
