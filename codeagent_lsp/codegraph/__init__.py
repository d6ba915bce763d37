"""CodeGraph: a live tree-sitter index of the workspace in SQLite, ranked with networkx.

languages (grammar wheels + this project's queries in queries/) -> extract (facts of one file)
-> store (SQLite through sqlite-utils, FTS5) -> indexer (walks roots, keeps it current)
-> graph (networkx: imports and references, personalized PageRank) -> related(...).
Knows files and symbols, not prompts or LSP.
"""
