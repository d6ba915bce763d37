"""Ranking over the stored edges: what else in the workspace matters at a cursor.

`related()` answers, within a token budget: definitions of identifiers near the cursor first,
then signatures from the modules the file imports, then symbols ranked by a personalized
PageRank over the import and reference graph (seeded on the cursor's file). PageRank runs on the
file's neighbourhood only (at most MAX_NEIGHBOURHOOD nodes), so a request stays in milliseconds
on a workspace the size of the Python standard library, and the ranking is cached per file so it
does not change while the user types inside it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

import networkx as nx
import numpy as np

from codeagent_lsp.codegraph.model import Definition
from codeagent_lsp.codegraph.store import GraphStore, StoredSymbol
from codeagent_lsp.codegraph.words import IDENTIFIER
from codeagent_lsp.lines import split_lines

NEAR_LINES = 12
"""Lines above and below the cursor whose identifiers count as near."""
MAX_NEIGHBOURHOOD = 2000
PAGERANK_CACHE = 64
MIN_SNIPPET_TOKENS = 8
MAX_DEFINITIONS = 8
_KEYWORDS = (
    "and as assert async await break case class const continue def del elif else enum except "
    "export extends false finally for from func function go if impl import in interface is "
    "lambda let match mod new nil none not null or package pass pub raise return self static "
    "struct super switch this throw true try type use var void while with yield int str bool "
    "float char long unsigned"
)
KEYWORDS = frozenset(_KEYWORDS.split())
REASONS = ("definition", "import", "ranked")
"""What a snippet is there for, in the order `related()` tries them (Snippet.reason)."""
Node = tuple[str, int]
"""A graph node: ("file", file id) or ("symbol", symbol id)."""
Order = dict[Node, tuple[str, str, str, int]]


@dataclass(frozen=True)
class Snippet:
    repo: str
    path: str
    line: int
    text: str
    reason: str
    """definition (of a name near the cursor), import (signature of an imported module) or
    ranked (personalized PageRank)."""
    definition: Definition | None = None
    """The declaration `text` shows, for callers that lay snippets out as a file outline."""


@dataclass(frozen=True)
class _Built:
    """A graph built from the store, its nodes' stable order, and the store version it saw."""

    graph: nx.DiGraph
    order: Order
    version: int


class CodeGraph:
    """Thread-safe: `related()` runs in request threads while CodeGraph updates (another
    thread) call `invalidate()`. A reader keeps the graph it started with; a graph or ranking
    computed from a store that changed meanwhile is used once but not kept."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._version = 0
        self._built: _Built | None = None
        self._ranks: OrderedDict[int, list[int]] = OrderedDict()

    def invalidate(self) -> None:
        """Files changed: rebuild the graph on next use."""
        with self._lock:
            self._version += 1
            self._built = None
            self._ranks.clear()

    def _stable_order(self, graph: nx.DiGraph) -> Order:
        """Each node's place in an order that the index's history does not change.

        Row ids are not stable: a file indexed again (opened, edited, closed) gets new ones,
        and set order of the nodes changes from process to process (string hashing). Ranked by
        either, equal and near-equal PageRank scores came out in another order, and the same
        cursor got another prompt. Files sort by (repo, path); a file's symbols by id, whose
        order within one file is the extraction order and does not change."""
        files = {f.id: (f.repo, f.path) for f in self.store.files()}
        owners = self.store.symbol_owners()
        order = {}
        for node in graph:
            kind, number = node
            owner = files.get(owners.get(number, -1) if kind == "symbol" else number, ("", ""))
            order[node] = (*owner, kind, number if kind == "symbol" else 0)
        return order

    def graph(self) -> nx.DiGraph:
        return self._snapshot().graph

    def _snapshot(self) -> _Built:
        with self._lock:
            built, version = self._built, self._version
        if built is not None:
            return built
        graph = self._build()  # outside the lock: seconds on a large workspace
        built = _Built(graph, self._stable_order(graph), version)
        with self._lock:
            if self._version == version:
                self._built = built
        return built

    def _build(self) -> nx.DiGraph:
        graph: nx.DiGraph[tuple[str, int]] = nx.DiGraph()
        for edge in self.store.edges():
            graph.add_edge(
                (edge.src_kind, edge.src_id), (edge.dst_kind, edge.dst_id), weight=edge.weight
            )
        # A symbol leads back to its file, so rank flows on through what that file uses.
        for symbol_id, file_id in self.store.symbol_owners().items():
            node = ("symbol", symbol_id)
            if node in graph:
                graph.add_edge(node, ("file", file_id), weight=1.0)
        return graph

    def related(
        self,
        repo: str,
        path: str,
        text: str,
        line: int,
        budget: int,
        count: Callable[[str], int] = lambda s: len(s) // 4 + 1,
        reasons: Collection[str] = REASONS,
    ) -> list[Snippet]:
        """Snippets most relevant to a cursor on `line` of `text`, best first, within `budget`
        tokens as measured by `count`; only those of the given `reasons` (Snippet.reason)."""
        picked: list[Snippet] = []
        seen: set[tuple[str, str, int]] = set()
        used = 0
        for snippet in self._candidates(repo, path, text, line, reasons):
            key = (snippet.repo, snippet.path, snippet.line)
            if key in seen:
                continue
            cost = count(snippet.text)
            if used + cost > budget:
                if budget - used < MIN_SNIPPET_TOKENS:
                    break  # full: looking further costs queries and adds nothing
                continue
            seen.add(key)
            picked.append(snippet)
            used += cost
        return picked

    def _candidates(self, repo: str, path: str, text: str, line: int, reasons: Collection[str]):
        if "definition" in reasons:
            yield from self._near_definitions(repo, path, text, line)
        if "import" in reasons:
            yield from self._imported_signatures(repo, path, text)
        if "ranked" in reasons:
            yield from self._ranked(repo, path)

    def _near_definitions(self, repo: str, path: str, text: str, line: int):
        imported = {f.id for _, f in self.store.imports_of(repo, path) if f is not None}
        for name in names_near(text, line):
            for symbol in self._best_definitions(name, repo, path, imported):
                yield _snippet(symbol, "definition")

    def _best_definitions(
        self, name: str, repo: str, path: str, imported: set[int]
    ) -> list[StoredSymbol]:
        candidates = self.store.definitions(name, limit=MAX_DEFINITIONS + 1)
        if len(candidates) > MAX_DEFINITIONS:
            return []  # a name defined everywhere ("get", "run") says nothing about this cursor
        found = [
            s
            for s in candidates
            if not (s.repo == repo and s.path == path)  # the file itself is in the prompt
        ]
        found.sort(key=lambda s: (s.file_id not in imported, s.repo != repo, s.path))
        return found[:2]

    def _imported_signatures(self, repo: str, path: str, text: str):
        """Module-level declarations of the files `path` imports: their API. Dunder names
        (`__all__`) are left out, and private ones (`_helper`) unless `text` uses them: they
        are not what a caller writes, and their tokens are better spent on another module."""
        used: set[str] | None = None  # the file's identifiers, found once when needed
        for _, target in self.store.imports_of(repo, path):
            if target is None:
                continue
            for symbol in self.store.symbols_in(target.repo, target.path):
                name = symbol.definition.name
                private = name.startswith("__")
                if name.startswith("_") and not private:
                    used = used if used is not None else set(IDENTIFIER.findall(text))
                    private = name not in used
                if symbol.definition.scope or private:
                    continue
                yield _snippet(symbol, "import")

    def _ranked(self, repo: str, path: str):
        record = self.store.file_info(repo, path)
        if record is None:
            return
        for symbol_id in self._ranking(record.id):
            for symbol in self.store.symbol(symbol_id):
                if symbol.file_id != record.id:
                    yield _snippet(symbol, "ranked")

    def _ranking(self, file_id: int) -> list[int]:
        with self._lock:
            cached = self._ranks.get(file_id)
            if cached is not None:
                self._ranks.move_to_end(file_id)
                return cached
        built = self._snapshot()
        graph, seed = built.graph, ("file", file_id)
        ranked: list[int] = []
        if seed in graph:
            order = built.order.__getitem__
            nodes = sorted(_neighbourhood(graph, seed, MAX_NEIGHBOURHOOD, order), key=order)
            scores = personalized_pagerank(graph, nodes, seed)
            ranked = [
                node[1]
                for node, _ in sorted(scores.items(), key=lambda item: (-item[1], order(item[0])))
                if node[0] == "symbol"
            ][:50]
        with self._lock:
            if self._version == built.version:
                self._ranks[file_id] = ranked
                if len(self._ranks) > PAGERANK_CACHE:
                    self._ranks.popitem(last=False)
        return ranked


def names_near(text: str, line: int) -> list[str]:
    """Identifiers within NEAR_LINES of the cursor line, nearest first, without keywords."""
    lines = split_lines(text)
    order: list[str] = []
    seen: set[str] = set()
    for distance in range(NEAR_LINES + 1):
        for row in {line - distance, line + distance}:
            if 0 <= row < len(lines):
                for name in IDENTIFIER.findall(lines[row]):
                    if name not in seen and name.lower() not in KEYWORDS and len(name) > 1:
                        seen.add(name)
                        order.append(name)
    return order


def personalized_pagerank(
    graph: nx.DiGraph, nodes: list, seed: object, alpha: float = 0.85, iterations: int = 50
) -> dict:
    """PageRank over `graph` restricted to `nodes`, restarting at `seed`.

    Hand-written with numpy rather than networkx.pagerank: that one needs scipy (not a
    dependency) and spends most of a request converting a subgraph view to a sparse matrix
    (about 450 ms for 2,000 nodes of the standard library's graph, against ~5 ms here).
    """
    index = {node: i for i, node in enumerate(nodes)}
    edges = []
    for node in nodes:
        i = index[node]
        for neighbour, data in graph.adj[node].items():
            j = index.get(neighbour)
            if j is not None:
                edges.append((i, j, data.get("weight", 1.0)))
    # Summed in the nodes' order, not the graph's insertion order: the same scores, to the
    # last bit, for the same nodes.
    edges.sort()
    src = [e[0] for e in edges]
    dst = [e[1] for e in edges]
    weight = [e[2] for e in edges]
    size = len(nodes)
    src_a, dst_a, w = np.array(src, dtype=int), np.array(dst, dtype=int), np.array(weight)
    out = np.bincount(src_a, weights=w, minlength=size)
    share = w / out[src_a] if len(w) else w
    restart = np.zeros(size)
    restart[index[seed]] = 1.0
    rank = restart.copy()
    dangling = out == 0
    for _ in range(iterations):
        spread = np.bincount(dst_a, weights=rank[src_a] * share, minlength=size)
        following = alpha * (spread + rank[dangling].sum() * restart) + (1 - alpha) * restart
        done = np.abs(following - rank).sum() < 1e-6
        rank = following
        if done:
            break
    return dict(zip(nodes, rank.tolist(), strict=True))


def _neighbourhood(
    graph: nx.DiGraph, seed: Node, limit: int, order: Callable[[Node], tuple] = lambda n: n
) -> set[Node]:
    """Breadth-first over edges in both directions from `seed`, at most `limit` nodes; the
    neighbours of a node are taken in `order`, so the limit cuts the same ones every time."""
    seen = {seed}
    frontier = [seed]
    while frontier and len(seen) < limit:
        following = []
        for node in frontier:
            neighbours = sorted({*graph.successors(node), *graph.predecessors(node)}, key=order)
            for neighbour in neighbours:
                if neighbour not in seen:
                    seen.add(neighbour)
                    following.append(neighbour)
                    if len(seen) >= limit:
                        return seen
        frontier = following
    return seen


def _snippet(symbol: StoredSymbol, reason: str) -> Snippet:
    definition = symbol.definition
    doc = definition.doc.strip().split("\n", 1)[0]
    text = definition.signature + (f"\n    {doc}" if doc else "")
    return Snippet(symbol.repo, symbol.path, definition.span.start_line, text, reason, definition)
