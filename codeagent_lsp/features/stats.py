"""`codeagent/stats`: recent request records (tokens reused and evaluated, timings), the slot
table and the CodeGraph's size. Documents appear by file name and a hash, never with their
text."""

from __future__ import annotations

import dataclasses
from typing import Any

from codeagent_lsp.features.indexing import IndexingFeature
from codeagent_lsp.server import STATS, CodeagentServer


def register(server: CodeagentServer) -> None:
    @server.feature(STATS)
    def stats(ls: CodeagentServer, _params: Any = None) -> dict[str, object]:
        result = ls.assistant.stats()
        index, indexing = ls.codegraph, ls.part(IndexingFeature)
        if index is not None and indexing is not None:
            result["codegraph"] = {
                "ready": indexing.ready.is_set(),
                "store": index.store.status.state,
                **dataclasses.asdict(index.store.stats()),
            }
        return result
