"""LSP features, one module each, with `register(server)`; each translates LSP to calls on the
Assistant (completion pipeline), `actions/`, `nextedits` and the CodeGraph, and back. Nothing
below this package (and `server`, `transport`, `node`, `documents`) imports pygls.

Entry point: `build_server` makes the server with every feature registered (`cli` calls it).
May import every layer below; features reach each other's state through
`CodeagentServer.part`, never through `server` importing a feature.
"""

from __future__ import annotations

from codeagent_lsp.engine.pool import BackendPool
from codeagent_lsp.features import (
    code_actions,
    completion,
    hover,
    indexing,
    lifecycle,
    navigation,
    next_edits,
    stats,
)
from codeagent_lsp.server import CodeagentServer, NodeConfig


def build_server(
    log_level: str | None = None,
    backends: BackendPool | None = None,
    node: NodeConfig | None = None,
) -> CodeagentServer:
    server = CodeagentServer(log_level, backends, node)
    features = (lifecycle, completion, stats, indexing, navigation, hover, code_actions, next_edits)
    for feature in features:
        feature.register(server)
    return server
