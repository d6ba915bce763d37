"""`codeagent/stats`: recent request records (tokens reused and evaluated, timings) and the
slot table. Documents appear by file name and a hash, never with their text."""

from __future__ import annotations

from typing import Any

from codeagent_lsp.server import CodeagentServer

STATS = "codeagent/stats"


def register(server: CodeagentServer) -> None:
    @server.feature(STATS)
    def stats(ls: CodeagentServer, _params: Any = None) -> dict[str, object]:
        return ls.assistant.stats()
