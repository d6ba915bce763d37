"""Benchmarks: figures, and a ratio against a baseline measured in the same run.

One module per `codeagent-lsp bench ...` command (`index`, `related`, `latency` and
`cold_open`, `quality` and `quality_run`, `next_edits`), run by `cli`. May import every layer
below the LSP one (`assistant`, `context`, `codegraph`, `engine`, `nextedits`, `security`);
never `features/`, `server`, pygls or lsprotocol.
"""
