"""Repository context for a completion prompt, within a token budget.

Sources (each an ablation of the quality benchmark): declarations of identifiers near the
cursor and the API of the modules the file imports (both from the CodeGraph's `related()`),
code windows similar to the lines above the cursor (BM25 over the FTS index), and the
workspace's API schemas, configuration and docs when their words meet the cursor's. They
claim the budget in BUDGET_ORDER and are laid out as files of the repository in PROMPT_ORDER
(most relevant last); declarations are written as a stub file (`def f(x): ...`, methods under
their class), the shape of code the model was trained on, and a file's windows come in file
order with `⋮...` where lines are left out (Aider's repository map's mark), so no window runs
into another mid-statement. Windows may come from the document itself, outside the lines the
prompt's excerpt holds; text the excerpt already holds is left out.

Stability: the context chosen for a cursor is kept while the cursor stays inside the same
definition (function, method, class body), so the prompt's first tokens do not change while the
user types and the KV cache keeps them.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from codeagent_lsp import lines
from codeagent_lsp.codegraph import extract, languages
from codeagent_lsp.codegraph.graph import names_near
from codeagent_lsp.codegraph.model import Definition
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.assets import AssetIndex

Source = Literal["definitions", "signatures", "windows", "assets"]
MODES: dict[str, frozenset[Source]] = {
    "none": frozenset(),
    "windows": frozenset({"windows"}),
    "definitions": frozenset({"definitions"}),
    "signatures": frozenset({"signatures"}),
    "windows+definitions": frozenset({"windows", "definitions"}),
    "assets": frozenset({"assets"}),
    "full": frozenset({"definitions", "signatures", "windows", "assets"}),
}
"""The context sources of each mode: the product uses "full"; the others are the quality
benchmark's ablations."""
# Source -> the CodeGraph's Snippet.reason it draws from related().
_REASONS: dict[Source, str] = {"definitions": "definition", "signatures": "import"}
BUDGET_ORDER: tuple[Source, ...] = ("definitions", "windows", "signatures", "assets")
"""Which source claims the budget first: declarations of the names at the cursor, code like
the cursor's, the API of the imported modules, then assets."""
PROMPT_ORDER: tuple[Source, ...] = ("assets", "signatures", "windows", "definitions")
"""Where a context file goes, by its most relevant source: the most relevant last, next to the
file being completed (the repository layout the model was trained on puts a file's
dependencies before it)."""
CountTokens = Callable[[str], int]
FileCost = Callable[[str, str], int]
"""Tokens a (path, text) context file takes in the prompt (FimTemplate.context_cost)."""

WINDOW_QUERY_LINES = 8
"""Lines above the cursor that make the query for similar code windows."""
WINDOWS = 4
ELISION = "⋮..."
"""Written where a context file leaves lines out."""


@dataclass(frozen=True)
class _Piece:
    """One candidate for the prompt: a declaration (rendered into its file's outline) or plain
    text (a code window, an asset)."""

    source: Source
    path: str
    text: str
    definition: Definition | None = None
    lines: range | None = None
    """A window's document lines (0-based)."""


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
        self,
        key: str,
        path: Path,
        text: str,
        offset: int,
        budget: int,
        cost: FileCost,
        excerpt: range | None = None,
    ) -> list[tuple[str, str]]:
        """(path, text) pairs for the prompt, costing at most `budget` tokens as `cost` counts
        them; the same pairs as last time while the cursor stays in the same definition.
        `excerpt` is the document's lines (0-based) the prompt holds around the cursor; None
        means the whole document, and then none of its windows is context."""
        if not MODES[self.mode] or self.index is None or budget <= 0:
            return []
        line = lines.line_count(text[:offset]) - 1  # LSP's line, as the CodeGraph's rows
        scope = self._scope(path, text, line)
        with self._lock:
            chosen = self._chosen.get(key)
        if chosen is not None and chosen.scope == scope:
            return chosen.files
        files = self._choose(path, text, offset, line, budget, cost, excerpt)
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
        self,
        path: Path,
        text: str,
        offset: int,
        line: int,
        budget: int,
        cost: FileCost,
        excerpt: range | None,
    ) -> list[tuple[str, str]]:
        assert self.index is not None
        sources = MODES[self.mode]
        located = self.index.locate(path)
        pieces: list[_Piece] = []
        reasons = [reason for source, reason in _REASONS.items() if source in sources]
        if reasons:
            snippet_cost: CountTokens = lambda s: cost("", s)  # noqa: E731
            for snippet in self.index.related(path, text, line, budget, snippet_cost, reasons):
                source: Source = "definitions" if snippet.reason == "definition" else "signatures"
                pieces.append(_Piece(source, snippet.path, snippet.text, snippet.definition))
        if "windows" in sources:
            pieces += self._windows(located, text, offset, excerpt)
        if "assets" in sources and self.assets is not None:
            words = names_near(text, line) + _literals_near(text, line)
            found = [s for s, _score in self.assets.relevant(words, 4, exclude_text=text)]
            pieces += [_Piece("assets", s.path, s.text) for s in self.index.for_prompt(found)]
        if excerpt is not None:  # the document's own windows may come from outside it
            text = "\n".join(lines.split_lines(text)[excerpt.start : excerpt.stop])
        return _fit(pieces, text, budget, cost)

    def _windows(
        self, located: tuple[str, str] | None, text: str, offset: int, excerpt: range | None
    ) -> list[_Piece]:
        assert self.index is not None
        query = "\n".join(text[:offset].split("\n")[-WINDOW_QUERY_LINES:])
        hits = self.index.similar_windows(query, WINDOWS, located, excerpt)
        return [
            _Piece("windows", hit.path, hit.text, lines=range(hit.start_line, hit.end_line + 1))
            for hit in hits
        ]


def _fit(pieces: list[_Piece], shown: str, budget: int, cost: FileCost) -> list[tuple[str, str]]:
    """Take pieces source by source in BUDGET_ORDER, skipping text the prompt already `shown`,
    each only if every file, rendered and priced as the template writes it, still fits the
    budget; then order the files by PROMPT_ORDER (files of the same rank as first taken)."""
    files: dict[str, list[_Piece]] = {}
    prices: dict[str, int] = {}
    for piece in sorted(pieces, key=lambda p: BUDGET_ORDER.index(p.source)):
        piece = dataclasses.replace(piece, text=piece.text.strip("\n"))
        held = files.get(piece.path, [])
        if not piece.text.strip() or piece.text in shown or piece in held:
            continue
        price = cost(piece.path, _render(piece.path, [*held, piece]))
        if sum(prices.values()) - prices.get(piece.path, 0) + price > budget:
            continue
        files[piece.path] = [*held, piece]
        prices[piece.path] = price
    placed = sorted(files, key=lambda p: max(PROMPT_ORDER.index(x.source) for x in files[p]))
    return [(path, _render(path, files[path])) for path in placed]


def _render(path: str, pieces: list[_Piece]) -> str:
    """A context file's text: its declarations as an outline in source order, its windows in
    file order with ELISION before each that does not follow on from the text above it, then
    its other plain pieces (assets) in the order taken."""
    declared = sorted(
        (p for p in pieces if p.definition is not None),
        key=lambda p: p.definition.span.start_line if p.definition else 0,
    )
    if languages.language_for(path) == "python":
        out = python_outline([p.definition for p in declared if p.definition])
    else:
        out = [p.text for p in declared]
    end = -1 if out else 0  # where the text above ends; after the outline, lines are left out
    windows = [(p.lines, p.text) for p in pieces if p.lines is not None]
    for where, text in sorted(windows, key=lambda window: window[0].start):
        if where.start != end:
            out.append(ELISION)
        out.append(text)
        end = where.stop
    out += [p.text for p in pieces if p.definition is None and p.lines is None]
    return "\n".join(out)


def python_outline(definitions: list[Definition]) -> list[str]:
    """Declarations as lines of a Python stub file, in the order given: `def f(x): ...`, a
    docstring's first line under its declaration, a method under its class (a header
    `class C:` is written when the class itself is not among them)."""
    out: list[str] = []
    open_classes: list[str] = []
    for definition in definitions:
        scope = definition.scope.split(".") if definition.scope else []
        keep = 0
        while keep < min(len(open_classes), len(scope)) and open_classes[keep] == scope[keep]:
            keep += 1
        del open_classes[keep:]
        for depth in range(keep, len(scope)):
            out.append(f"{'    ' * depth}class {scope[depth]}:")
            open_classes.append(scope[depth])
        out += _stub(definition, "    " * len(scope))
        if definition.kind == "class":
            open_classes.append(definition.name)
    return out


def _stub(definition: Definition, indent: str) -> list[str]:
    # The docstring's first line as its source spelled it; a quote or backslash at its end
    # would run into the closing quotes.
    doc = definition.doc.strip().split("\n", 1)[0].replace('"""', "'").rstrip('"\\ ')
    signature = definition.signature
    if not signature.startswith(("def ", "async def ", "class ")):  # a variable, a constant
        line = signature if _parses(signature) else f"{definition.name} = ..."
        return [f"{indent}# {doc}", f"{indent}{line}"] if doc else [f"{indent}{line}"]
    if doc:
        return [f"{indent}{signature}:", f'{indent}    """{doc}"""']
    if definition.kind == "class":  # its methods may follow, indented under it
        return [f"{indent}{signature}:", f"{indent}    ..."]
    return [f"{indent}{signature}: ..."]


@functools.lru_cache(maxsize=4096)
def _parses(line: str) -> bool:
    """A declaration squeezed onto one line is still Python (not cut at SIGNATURE_MAX, no
    comment that swallowed the closing bracket). tree-sitter, not `ast`: its parser is one
    per thread, where `ast` warns on odd escapes and silencing that is process-wide."""
    return not extract.parse(line.encode("utf-8", "surrogatepass"), "python").root_node.has_error


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
