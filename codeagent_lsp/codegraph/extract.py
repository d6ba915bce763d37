"""The facts of one file: its definitions, references and imports, read with this project's
tree-sitter queries (queries/<language>/*.scm; capture names in queries/README.md); and the
code at a line (`code_at`, `definition_line`) that the code actions and hover work on.

Positions are converted from tree-sitter's bytes to code points per line. Text that is kept
(names, signatures, docs) is decoded with errors="replace", so invalid UTF-8 never raises.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import tree_sitter

from codeagent_lsp import lines
from codeagent_lsp.codegraph.languages import extraction_query, language_for, parser_for, spec
from codeagent_lsp.codegraph.model import Definition, FileFacts, Import, Reference, Span

SIGNATURE_MAX = 200
_WINDOW = 8 * 1024
_READ_SLICE = 4 * 1024
_HOLD_S = 0.002
"""Longest hold of the GIL between two releases while tree-sitter reads a source."""

# Kinds whose definitions enclose others and so appear in their scope. A typedef, variable or
# field may contain a struct or a lambda, but "Point.Point.x" would be noise.
_NOT_CONTAINERS = frozenset({"type", "variable", "constant", "field", "macro"})
_FUNCTIONS = frozenset({"function", "method"})
_LOCAL_KINDS = frozenset({"variable", "constant"})

# Nodes that wrap a definition without being one: the comment above them documents it.
_WRAPPERS = frozenset(
    {"decorated_definition", "export_statement", "template_declaration", "ambient_declaration"}
)
# Between a doc comment and its item: Rust attributes, decorators that are siblings (TypeScript
# class members).
_SKIPPED_BEFORE = frozenset({"attribute_item", "inner_attribute_item", "decorator"})


_WHITESPACE = re.compile(r"\s+")
_LINE_MARKER = re.compile(r"^\s*(?://[/!]?|#+!?|--)\s?")
_BLOCK_LINE_MARKER = re.compile(r"^\s*\*(?!/) ?")


def parse(
    source: bytes, language: str, old_tree: tree_sitter.Tree | None = None
) -> tree_sitter.Tree:
    """Parse `source`; pass the previous tree, already edited with `Tree.edit`, to reparse
    only what changed (open documents). tree-sitter holds the GIL while it parses (seconds for
    a dense megabyte): it reads the source in slices here, and a read every `_HOLD_S` lets
    other threads, the event loop among them, run. Rows are LSP's lines (`lines.parser_source`)."""
    parser = parser_for(language)
    source = lines.parser_source(source)
    held_since = time.perf_counter()

    def read(offset: int, _point: tuple[int, int]) -> bytes:
        # The tree keeps this callback: each `Node.text` and query predicate later reads
        # through it too (tens of thousands of calls per file). A sleep(0) costs 60-100 us
        # of wall time (the kernel's timer slack), so the GIL is let go once it was held
        # `_HOLD_S`, not at every call.
        nonlocal held_since
        if time.perf_counter() - held_since >= _HOLD_S:
            time.sleep(0)  # releases the GIL for a moment
            held_since = time.perf_counter()
        return source[offset : offset + _READ_SLICE]

    if old_tree is None:
        return parser.parse(read)
    return parser.parse(read, old_tree)


def extract(source: bytes, language: str, tree: tree_sitter.Tree | None = None) -> FileFacts:
    """The definitions, references and imports of one file. Syntax errors give what could be
    read around them and `has_errors=True`."""
    if tree is None:
        tree = parse(source, language)
    root = tree.root_node
    text = _Text(source)
    compiled, kinds = extraction_query(language)
    definitions: dict[tuple[int, int], _Found] = {}
    references: dict[tuple[int, int], _Seen] = {}
    imports = _Imports(compiled, spec(language).module_separator, text)
    # One walk for the three queries.
    for pattern, captures in _matches(compiled, root):
        kind = kinds[pattern]
        if kind == "definitions":
            _add_definition(definitions, pattern, captures, text)
        elif kind == "references":
            _add_references(references, pattern, captures, text)
        else:
            imports.add(pattern, captures)
    kept, containers = _scoped(sorted(definitions.values(), key=_Found.order), language, text)
    for item in kept:
        references.pop(item.name_key, None)  # a definition's own name
    return FileFacts(
        language=language,
        definitions=[item.fact for item in kept if item.fact is not None],
        references=_references(references, containers, text),
        imports=imports.result(),
        has_errors=root.has_error,
    )


# A reference before its scope is known: pattern, kind and span as plain tuples, not nodes:
# half a million live nodes make each full pass of the garbage collector slow, and a 5 MB
# file triggers dozens of them.
_Seen = tuple[int, str, tuple[int, int, int, int]]


def _add_definition(
    definitions: dict[tuple[int, int], _Found],
    pattern: int,
    captures: dict[str, list[tree_sitter.Node]],
    text: _Text,
) -> None:
    # Where several patterns match one name the first wins: a method before a function.
    item = _found(pattern, captures, text)
    if item is not None:
        known = definitions.get(item.name_key)
        if known is None or pattern < known.pattern:
            definitions[item.name_key] = item


def _add_references(
    references: dict[tuple[int, int], _Seen],
    pattern: int,
    captures: dict[str, list[tree_sitter.Node]],
    text: _Text,
) -> None:
    # Where several patterns match one node the first wins: a call before an attribute.
    for capture, nodes in captures.items():
        if capture.startswith("reference."):
            node = nodes[0]
            key = (node.start_byte, node.end_byte)
            known = references.get(key)
            if known is None or pattern < known[0]:
                references[key] = (pattern, capture.removeprefix("reference."), text.points(node))


def _matches(
    compiled: tree_sitter.Query, root: tree_sitter.Node
) -> Iterator[tuple[int, dict[str, list[tree_sitter.Node]]]]:
    """All matches, a window of bytes at a time: matches() returns a list, and for a 5 MB
    file one list would hold half a million of them at once, and keeping them alive long
    enough to reach the oldest generation makes the garbage collector rescan everything
    dozens of times. A match that straddles two windows comes twice; the callers keep one."""
    cursor = tree_sitter.QueryCursor(compiled)
    end = root.end_byte
    for start in range(0, max(end, 1), _WINDOW):
        cursor.set_byte_range(start, min(start + _WINDOW, end))
        yield from cursor.matches(root)


class _Text:
    """Node text and code-point positions; pure-ASCII sources (most) skip the conversion."""

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.ascii = source.isascii()

    def __call__(self, node: tree_sitter.Node) -> str:
        return self.slice(node.start_byte, node.end_byte)

    def slice(self, start: int, end: int) -> str:
        return self.source[start:end].decode("utf-8", errors="replace")

    def column(self, byte: int, byte_column: int) -> int:
        if self.ascii or byte_column == 0:
            return byte_column
        line = self.source[byte - byte_column : byte]
        if line.isascii():
            return byte_column
        return len(line.decode("utf-8", errors="replace"))

    def span(self, node: tree_sitter.Node) -> Span:
        return Span(*self.points(node))

    def points(self, node: tree_sitter.Node) -> tuple[int, int, int, int]:
        """Start line, start column, end line, end column; columns in code points."""
        start, end = node.start_point, node.end_point
        if self.ascii:
            return (start.row, start.column, end.row, end.column)
        return (
            start.row,
            self.column(node.start_byte, start.column),
            end.row,
            self.column(node.end_byte, end.column),
        )


@dataclass(slots=True)
class _Found:
    """A definition match before its scope is known."""

    kind: str
    node: tree_sitter.Node
    start: int
    end: int
    name_node: tree_sitter.Node
    name_key: tuple[int, int]
    body: tree_sitter.Node | None
    receiver: str
    pattern: int
    fact: Definition | None = None

    def order(self) -> tuple[int, int, int]:
        """Outer definitions before those they contain."""
        return (self.start, -self.end, self.name_key[0])


@dataclass(frozen=True, slots=True)
class _Container:
    start: int
    end: int
    kind: str
    qualified_name: str


def _found(pattern: int, captures: dict[str, list[tree_sitter.Node]], text: _Text) -> _Found | None:
    kind = ""
    for capture in captures:
        if capture.startswith("definition."):
            kind = capture
            break
    names = captures.get("name")
    if not kind or not names:
        return None
    node, name = captures[kind][0], names[0]
    body = captures.get("body")
    # `geo::Circle::area` captures geo and Circle: the scope reads "geo.Circle".
    receiver = ".".join(text(n).replace("::", ".") for n in captures.get("receiver", ()))
    return _Found(
        kind=kind.removeprefix("definition."),
        node=node,
        start=node.start_byte,
        end=node.end_byte,
        name_node=name,
        name_key=(name.start_byte, name.end_byte),
        body=body[0] if body else None,
        receiver=receiver,
        pattern=pattern,
    )


def _scoped(
    ordered: list[_Found], language: str, text: _Text
) -> tuple[list[_Found], list[_Container]]:
    """Give each definition its scope (enclosing containers, then an explicit receiver) and
    drop variables local to functions. `ordered` is sorted by (start, -end)."""
    kept: list[_Found] = []
    containers: list[_Container] = []
    stack: list[_Container] = []
    for item in ordered:
        start, end = item.start, item.end
        while stack and not _strictly_contains(stack[-1], start, end):
            stack.pop()
        parent = stack[-1] if stack else None
        if item.kind in _LOCAL_KINDS and parent is not None and parent.kind in _FUNCTIONS:
            continue
        scope = parent.qualified_name if parent else ""
        if item.receiver:
            scope = f"{scope}.{item.receiver}" if scope else item.receiver
        item.fact = _definition(item, scope, language, text)
        kept.append(item)
        if item.kind not in _NOT_CONTAINERS:
            container = _Container(start, end, item.kind, item.fact.qualified_name)
            containers.append(container)
            stack.append(container)
    return kept, containers


def _strictly_contains(outer: _Container, start: int, end: int) -> bool:
    return outer.start <= start and end <= outer.end and (outer.start, outer.end) != (start, end)


def _definition(item: _Found, scope: str, language: str, text: _Text) -> Definition:
    return Definition(
        name=text(item.name_node),
        kind=item.kind,
        span=text.span(item.node),
        name_span=text.span(item.name_node),
        signature=_signature(item, text),
        doc=_doc(item, language, text),
        scope=scope,
    )


def _signature(item: _Found, text: _Text) -> str:
    """The declaration without its body, on one line."""
    start = item.node.start_byte
    end = _signature_end(item.body) if item.body is not None else item.node.end_byte
    # Only what a signature can be: a 5 MB initialiser need not be decoded.
    raw = text.slice(start, min(end, start + SIGNATURE_MAX * 8))
    line = _WHITESPACE.sub(" ", raw).strip()
    if line[-1:] in ("{", ":", ";"):
        line = line[:-1].rstrip()
    if len(line) > SIGNATURE_MAX:
        line = line[: SIGNATURE_MAX - 1].rstrip() + "…"
    return line


def _signature_end(body: tree_sitter.Node) -> int:
    """Where the text before the body ends, leaving out comments between them."""
    before = body.prev_sibling
    while before is not None and "comment" in before.type:
        before = before.prev_sibling
    return before.end_byte if before is not None else body.start_byte


def _doc(item: _Found, language: str, text: _Text) -> str:
    if language == "python" and item.body is not None:
        docstring = _python_docstring(item.body, text)
        if docstring:
            return docstring
    return _comment_above(item.node, text)


def _python_docstring(body: tree_sitter.Node, text: _Text) -> str:
    first = body.named_child(0) if body.named_child_count else None
    if first is None or first.type != "expression_statement" or first.named_child_count != 1:
        return ""
    string = first.named_child(0)
    if string.type != "string":
        return ""
    content = "".join(text(c) for c in string.named_children if c.type == "string_content")
    return textwrap.dedent(_dedent_tail(content)).strip()


def _dedent_tail(docstring: str) -> str:
    """PEP 257: the first line is not indented like the rest, so dedent those alone."""
    first, _, rest = docstring.partition("\n")
    return first.strip() + "\n" + textwrap.dedent(rest) if rest else first


def _comment_above(node: tree_sitter.Node, text: _Text) -> str:
    """The contiguous comments ending on the line above the definition (or its wrapper)."""
    while node.parent is not None and node.parent.type in _WRAPPERS:
        node = node.parent
    comments: list[tree_sitter.Node] = []
    next_row = node.start_point.row
    sibling = node.prev_sibling
    while sibling is not None:
        if sibling.type in _SKIPPED_BEFORE:
            next_row = sibling.start_point.row
        elif "comment" in sibling.type and _last_row(sibling) >= next_row - 1:
            previous = sibling.prev_sibling
            if previous is not None and _last_row(previous) == sibling.start_point.row:
                break  # a trailing comment of the code before it
            comments.append(sibling)
            next_row = sibling.start_point.row
        else:
            break
        sibling = sibling.prev_sibling
    return _strip_comments(text(c) for c in reversed(comments))


def _last_row(node: tree_sitter.Node) -> int:
    # Some grammars (Rust's line comments) end a node at column 0 of the next line.
    end = node.end_point
    return end.row - 1 if end.column == 0 and end.row > node.start_point.row else end.row


def _strip_comments(comments: Iterable[str]) -> str:
    kept: list[str] = []
    for comment in comments:
        comment = comment.strip()
        if comment.startswith("/*"):
            body = comment[2:].removesuffix("*/").lstrip("*!")
            kept.extend(_BLOCK_LINE_MARKER.sub("", line) for line in body.splitlines())
        else:
            kept.extend(_LINE_MARKER.sub("", line) for line in comment.splitlines())
    return textwrap.dedent("\n".join(line.rstrip() for line in kept)).strip()


def _references(
    found: dict[tuple[int, int], _Seen],
    containers: list[_Container],
    text: _Text,
) -> list[Reference]:
    ordered = sorted(found.items())
    scopes = _scopes_of([key for key, _ in ordered], containers)
    return [
        Reference(name=text.slice(*key), kind=kind, span=Span(*points), scope=scope)
        for (key, (_, kind, points)), scope in zip(ordered, scopes, strict=True)
    ]


def _scopes_of(ranges: list[tuple[int, int]], containers: list[_Container]) -> list[str]:
    """The innermost container of each (sorted, non-nested) byte range."""
    scopes: list[str] = []
    stack: list[_Container] = []
    index = 0
    for start, end in ranges:
        while index < len(containers) and containers[index].start <= start:
            container = containers[index]
            while stack and stack[-1].end < container.end:
                stack.pop()
            stack.append(container)
            index += 1
        while stack and stack[-1].end < end:
            stack.pop()
        scopes.append(stack[-1].qualified_name if stack else "")
    return scopes


class _Imports:
    """One Import per statement, module and alias: `from m import a, b as c` gives
    Import("m", ("a",)) and Import("m", ("b",), alias="c")."""

    def __init__(self, compiled: tree_sitter.Query, separator: str, text: _Text) -> None:
        self.compiled = compiled
        self.separator = separator
        self.text = text
        self.merged: dict[tuple[int, int, str, str], tuple[list[str], tree_sitter.Node]] = {}

    def add(self, pattern: int, captures: dict[str, list[tree_sitter.Node]]) -> None:
        statements = captures.get("import")
        if not statements:
            return
        text = self.text
        settings = self.compiled.pattern_settings(pattern)
        modules = captures.get("import.module", ())
        module = self.separator.join(_unquote(text(n)) for n in modules)
        module = module or str(settings.get("import.module") or "")
        aliases = captures.get("import.alias")
        alias = text(aliases[0]) if aliases else ""
        names = [text(n) for n in captures.get("import.name", ())]
        if not names and settings.get("import.name"):
            names = [str(settings["import.name"])]
        node = statements[0]
        key = (node.start_byte, node.end_byte, module, alias)
        merged_names, _ = self.merged.setdefault(key, ([], node))
        merged_names.extend(name for name in names if name not in merged_names)

    def result(self) -> list[Import]:
        imports = [
            Import(module=key[2], names=tuple(names), alias=key[3], span=self.text.span(node))
            for key, (names, node) in sorted(self.merged.items(), key=lambda item: item[0][:2])
        ]
        return _without_bare_duplicates(imports)


def _unquote(module: str) -> str:
    return module.strip().strip("\"'`<>")


def _without_bare_duplicates(imports: list[Import]) -> list[Import]:
    """Drop an Import without names or alias when the same statement imports the same module
    with them (`const {a} = require("m")` matches as a plain require too)."""
    full = {(i.span, i.module) for i in imports if i.names or i.alias}
    return [i for i in imports if i.names or i.alias or (i.span, i.module) not in full]


# --- the code at a line, for the code actions and hover -----------------------------------------

NEARBY_LINES = 10
"""Lines around the cursor explained when no definition encloses it."""
AROUND_LINES = 5000
"""Lines parsed on either side of the line `code_at` is asked about: what encloses a line of
real code starts within them, and one request on a document of 100,000 functions does not
parse it whole (20 s of a core on a 2-core machine; 10,000 lines take about half a second)."""


@dataclass(frozen=True)
class CodeAtLine:
    code: str
    language: str
    name: str
    """The enclosing definition's qualified name, "" for module-level code."""
    first_line: int


def code_key(code: str) -> str:
    """Identifies a piece of code by its text, so a cached answer dies with an edit."""
    return hashlib.sha256(code.encode("utf-8", errors="replace")).hexdigest()[:16]


def code_at(text: str, path: str, line: int) -> CodeAtLine:
    """The innermost function, method or class around `line` (0-based), else nearby lines."""
    language = language_for(path) or ""
    rows = lines.split_lines(text)
    first = max(0, line - AROUND_LINES)
    around = "\n".join(rows[first : line + AROUND_LINES + 1])
    inner = _innermost(around, language, line - first) if language else None
    if inner is not None:
        start, end = first + inner.span.start_line, first + inner.span.end_line
        return CodeAtLine("\n".join(rows[start : end + 1]), language, inner.qualified_name, start)
    start = max(0, line - NEARBY_LINES)
    code = "\n".join(rows[start : line + NEARBY_LINES + 1])
    return CodeAtLine(code, language, "", start)


def definition_line(text: str, path: str, name: str) -> int | None:
    """The first line of the definition called `name` (or qualified `Class.method`)."""
    language = language_for(path)
    if language is None:
        return None
    facts = extract(text.encode("utf-8", errors="surrogatepass"), language)
    for definition in facts.definitions:
        if name in (definition.name, definition.qualified_name):
            return definition.span.start_line
    return None


def _innermost(text: str, language: str, line: int) -> Definition | None:
    facts = extract(text.encode("utf-8", errors="surrogatepass"), language)
    holding = [
        d
        for d in facts.definitions
        if d.span.start_line <= line <= d.span.end_line and d.span.end_line > d.span.start_line
    ]
    return max(holding, key=lambda d: d.span.start_line, default=None)
