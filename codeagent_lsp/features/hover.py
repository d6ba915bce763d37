"""Hover from the CodeGraph: signature, docstring, where it is defined, how often it is used.
Instant: no model involved."""

from __future__ import annotations

import asyncio

from lsprotocol import types

from codeagent_lsp.codegraph.store import StoredSymbol
from codeagent_lsp.features.navigation import name_at
from codeagent_lsp.server import CodeagentServer


def register(server: CodeagentServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: CodeagentServer, params: types.HoverParams) -> types.Hover | None:
        name, path = name_at(ls, params.text_document.uri, params.position)
        if not name or ls.codegraph is None:
            return None
        index = ls.codegraph
        found = await asyncio.to_thread(index.definitions, name, path)
        if not found:
            return None
        uses = len(await asyncio.to_thread(index.references, name))
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, markdown(found[0], uses)))


def markdown(symbol: StoredSymbol, uses: int) -> str:
    definition = symbol.definition
    parts = [f"```{symbol.language}\n{definition.signature}\n```"]
    if definition.doc:
        parts.append(definition.doc)
    where = f"{symbol.repo}/{symbol.path}:{definition.span.start_line + 1}"
    plural = "" if uses == 1 else "s"
    parts.append(f"*{definition.kind}* defined in `{where}` · {uses} reference{plural}")
    return "\n\n".join(parts)
