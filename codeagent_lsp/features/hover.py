"""Hover from the CodeGraph: signature, docstring, where it is defined, how often it is used.
Instant: no model involved."""

from __future__ import annotations

from lsprotocol import types

from codeagent_lsp.codegraph.extract import code_at, code_key
from codeagent_lsp.codegraph.store import StoredSymbol
from codeagent_lsp.features.navigation import name_at
from codeagent_lsp.server import CodeagentServer


def register(server: CodeagentServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: CodeagentServer, params: types.HoverParams) -> types.Hover | None:
        # Off the event loop: a long line or a large index must not stall other requests.
        name, path = await ls.off_loop(name_at, ls, params.text_document.uri, params.position)
        if not name or ls.codegraph is None:
            return None
        index = ls.codegraph
        found = await ls.off_loop(index.definitions, name, path)
        if not found:
            return None
        uses = len(await ls.off_loop(index.references, name))
        text = markdown(found[0], uses)
        explained = await ls.off_loop(_explanation, ls, found[0])
        if explained:
            text += "\n\n---\n\n" + explained
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text))


def _explanation(ls: CodeagentServer, symbol: StoredSymbol) -> str | None:
    """The model's explanation of this symbol, if one was computed for its current code."""
    if ls.codegraph is None or not ls.explanations:  # spare the file read and parse
        return None
    location = ls.codegraph.symbol_location(symbol)
    if location is None:
        return None
    source = ls.open_text(location.path)
    if source is None:
        try:
            source = location.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    code = code_at(source, str(location.path), symbol.definition.span.start_line).code
    return ls.explanations.get((str(location.path), code_key(code)))


def markdown(symbol: StoredSymbol, uses: int) -> str:
    definition = symbol.definition
    parts = [f"```{symbol.language}\n{definition.signature}\n```"]
    if definition.doc:
        parts.append(definition.doc)
    where = f"{symbol.repo}/{symbol.path}:{definition.span.start_line + 1}"
    plural = "" if uses == 1 else "s"
    parts.append(f"*{definition.kind}* defined in `{where}` · {uses} reference{plural}")
    return "\n\n".join(parts)
