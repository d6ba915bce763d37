"""Repository context for a completion prompt, within a token budget.

What goes in, best first: definitions of identifiers near the cursor, signatures of the modules
the file imports, symbols ranked by personalized PageRank (all three from the CodeGraph's
`related()`), code windows similar to the lines around the cursor (BM25 over the FTS index), and
the workspace's API schemas, configuration and docs when their words meet the cursor's. Text the
prefix or suffix already holds is left out.

Stability: the context chosen for a cursor is kept while the cursor stays inside the same
definition (function, method, class body), so the prompt's first tokens do not change while the
user types and the KV cache keeps them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from codeagent_lsp import lines
from codeagent_lsp.codegraph.graph import names_near
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.assets import AssetIndex

Source = Literal["definitions", "signatures", "ranked", "windows", "assets"]
MODES: dict[str, frozenset[Source]] = {
    "none": frozenset(),
    "windows": frozenset({"windows"}),
    "definitions": frozenset({"definitions"}),
    "signatures": frozenset({"signatures"}),
    "windows+definitions": frozenset({"windows", "definitions"}),
    "assets": frozenset({"assets"}),
    "full": frozenset({"definitions", "signatures", "ranked", "windows", "assets"}),
}
"""The context sources of each mode: the product uses "full"; the others are the quality
benchmark's ablations."""
# Source -> the CodeGraph's Snippet.reason it draws from related().
_REASONS: dict[Source, str] = {
    "definitions": "definition",
    "signatures": "import",
    "ranked": "ranked",
}
CountTokens = Callable[[str], int]
FileCost = Callable[[str, str], int]
"""Tokens a (path, text) context file takes in the prompt (FimTemplate.context_cost)."""

WINDOW_QUERY_LINES = 8
"""Lines above the cursor that make the query for similar code windows."""
WINDOWS = 4


@dataclass
class _Chosen:
    scope: str
    files: list[tuple[str, str]]


@dataclass
class ContextBuilder:
    index: WorkspaceIndex | None
    assets: AssetIndex | None = None
    mode: str = "full"
    """A key of MODES."""
    _chosen: dict[str, _Chosen] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def context_files(
        self, key: str, path: Path, text: str, offset: int, budget: int, cost: FileCost
    ) -> list[tuple[str, str]]:
        """(path, text) pairs for the prompt, costing at most `budget` tokens as `cost` counts
        them; the same pairs as last time while the cursor stays in the same definition."""
        if not MODES[self.mode] or self.index is None or budget <= 0:
            return []
        line = lines.line_count(text[:offset]) - 1  # LSP's line, as the CodeGraph's rows
        scope = self._scope(path, text, line)
        with self._lock:
            chosen = self._chosen.get(key)
        if chosen is not None and chosen.scope == scope:
            return chosen.files
        files = self._choose(path, text, offset, line, budget, cost)
        with self._lock:
            self._chosen[key] = _Chosen(scope, files)
        return files

    def forget(self, key: str) -> None:
        with self._lock:
            self._chosen.pop(key, None)

    def _scope(self, path: Path, text: str, line: int) -> str:
        """The innermost definition holding the cursor (by qualified name, which typing does
        not move), else the indentation block's opener line text."""
        located = self.index.locate(path) if self.index else None
        if located and self.index:
            inner = None
            for symbol in self.index.store.symbols_in(*located):
                span = symbol.definition.span
                holds = span.start_line <= line <= span.end_line and span.end_line > span.start_line
                if holds and (inner is None or span.start_line >= inner.span.start_line):
                    inner = symbol.definition
            if inner is not None:
                return f"{inner.kind}:{inner.qualified_name}"
        return "module:" + _block_opener(lines.split_lines(text), line)

    def _choose(
        self, path: Path, text: str, offset: int, line: int, budget: int, cost: FileCost
    ) -> list[tuple[str, str]]:
        assert self.index is not None
        sources = MODES[self.mode]
        located = self.index.locate(path)
        candidates: list[tuple[str, str]] = []
        reasons = [reason for source, reason in _REASONS.items() if source in sources]
        if reasons:
            snippet_cost: CountTokens = lambda s: cost("", s)  # noqa: E731
            for snippet in self.index.related(path, text, line, budget, snippet_cost, reasons):
                candidates.append((snippet.path, snippet.text))
        if "windows" in sources:
            candidates += self._windows(located, text, offset)
        if "assets" in sources and self.assets is not None:
            words = names_near(text, line) + _literals_near(text, line)
            found = [s for s, _score in self.assets.relevant(words, 4, exclude_text=text)]
            candidates += [(s.path, s.text) for s in self.index.for_prompt(found)]
        return _fit(candidates, text, budget, cost)

    def _windows(
        self, located: tuple[str, str] | None, text: str, offset: int
    ) -> list[tuple[str, str]]:
        assert self.index is not None
        query = "\n".join(text[:offset].split("\n")[-WINDOW_QUERY_LINES:])
        hits = self.index.similar_windows(query, WINDOWS, exclude=located)
        return [(hit.path, hit.text) for hit in hits]


def _fit(
    candidates: list[tuple[str, str]], document: str, budget: int, cost: FileCost
) -> list[tuple[str, str]]:
    """Group snippets by file in first-seen order, skip what the document already holds, and
    add each only if every file, priced as the template writes it, still fits the budget."""
    by_file: dict[str, list[str]] = {}
    prices: dict[str, int] = {}
    for path, snippet in candidates:
        snippet = snippet.strip("\n")
        pieces = by_file.get(path, [])
        if not snippet.strip() or snippet in document or snippet in pieces:
            continue
        price = cost(path, "\n".join([*pieces, snippet]))
        if sum(prices.values()) - prices.get(path, 0) + price > budget:
            continue
        by_file[path] = [*pieces, snippet]
        prices[path] = price
    return [(path, "\n".join(pieces)) for path, pieces in by_file.items()]


_LITERAL = re.compile(r"""["']([^"'\n]{3,80})["']""")


def _literals_near(text: str, line: int, spread: int = 6) -> list[str]:
    """String literals around the cursor ("/users/{id}", "DATABASE_URL"): assets match them."""
    near = lines.split_lines(text)[max(0, line - spread) : line + spread + 1]
    return [m.group(1) for row in near for m in _LITERAL.finditer(row)]


def _block_opener(rows: list[str], line: int) -> str:
    """The nearest line above with less indentation than the cursor line (its block's head)."""
    current = rows[line] if line < len(rows) else ""
    depth = len(current) - len(current.lstrip())
    for row in range(line - 1, -1, -1):
        candidate = rows[row]
        if candidate.strip() and len(candidate) - len(candidate.lstrip()) < max(depth, 1):
            return f"{row}:{candidate.strip()[:80]}"
    return "top"
