"""CodeGraph: a live tree-sitter index of the workspace in SQLite, ranked with networkx.

languages (grammar wheels + this project's queries in queries/) -> extract (facts of one file,
and the code at a line) -> walk (the workspace's files, git's ignore rules) -> indexer (keeps
the store current) -> store (SQLite through sqlite-utils, FTS5; its schema and opening checks
in schema, import resolution in imports) -> graph (networkx: imports and references,
personalized PageRank). `workspace.WorkspaceIndex` is the entry point the server and the
pipelines use (`related`, `definitions`, `references`); `changes` and `live` follow edits.

Knows files and symbols, not prompts or LSP, and prints nothing. May import `security` (path
rules, roots), `settings` and `lines` (LSP's line model: rows are LSP lines); never
`context/`, `engine/`, `actions/`, `features/`.
"""
