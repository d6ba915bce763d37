"""Next edits: the places a changed definition affects, and the edit each one needs.

The places are facts of the CodeGraph (the references to the changed name, in files of the
same language family, that the caller's filter lets through); each is checked against the new
definition in its own file's syntax tree, so a place already updated is not flagged. Renames,
moves and async toggles are written here without the model; a changed parameter list is
rewritten by the model at each call, with the old and new signature and their diff, and kept
only when it parses and binds to the new signature. Nothing here knows LSP: places are rows
and code-point columns, as in the CodeGraph.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter

from codeagent_lsp.actions import testgen
from codeagent_lsp.actions.prompts import SYSTEM, fenced_code
from codeagent_lsp.assistant import Assistant
from codeagent_lsp.codegraph.changes import Change, Param, Signature
from codeagent_lsp.codegraph.extract import parse
from codeagent_lsp.codegraph.languages import language_for
from codeagent_lsp.codegraph.model import Import
from codeagent_lsp.codegraph.store import StoredReference
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.lines import parser_source, split_lines, to_offset

Point = tuple[int, int]
"""(row, code-point column)."""
Allowed = Callable[[str, str], bool]
"""May a file (repository, posix path) be flagged and edited?"""
TextOf = Callable[[Path], str | None]
"""A file's text as the editor has it (None: not open; it is read from disk)."""

_CALLS = frozenset({"call", "call_expression", "new_expression"})
_AWAITS = frozenset({"await", "await_expression"})
_SPLATS = ("splat", "spread", "variadic")
_FAMILY = {"javascript": "ecma", "typescript": "ecma", "tsx": "ecma"}
_RECEIVERS = ("attribute", "member_expression", "selector_expression")
_PACKAGE_FILES = ("__init__", "index")
"""Modules that re-export what their package's files define."""
PARSED_FILES = 256
"""Syntax trees kept of the files searched last."""
MODEL_TOKENS = 160
"""Most tokens of one rewritten call."""


@dataclass(frozen=True)
class Site:
    """One place to update: replace `old_text` between `start` and `end` of the file."""

    repo: str
    path: str
    file: Path
    change: Change
    start: Point
    end: Point
    old_text: str
    new_text: str | None
    """The replacement, or None when the model writes it (a call to a changed signature)."""
    context: str = ""
    """The lines around the place, for the model."""
    unbound: bool = False
    """A call that does not bind to the new signature at all (flagged until it does)."""

    @property
    def message(self) -> str:
        return self.change.sentence()


@dataclass(frozen=True)
class Arg:
    keyword: str | None
    splat: bool = False


def family(language: str | None) -> str | None:
    return _FAMILY.get(language or "", language)


# --- finding the places -------------------------------------------------------------------------


@dataclass
class Finder:
    """Finds the places of changes in one CodeGraph, remembering each change's places as they
    were when it was first seen: a call not edited since still needs the new order of its
    arguments even when their count fits."""

    index: WorkspaceIndex
    text_of: TextOf
    allowed: Allowed
    _first: dict[tuple[str, str, str], set[tuple[str, str, str]]] = field(default_factory=dict)
    _parsed: dict[Path, SourceFile] = field(default_factory=dict)
    """The files last searched, parsed: a change re-checks the same files at every pause."""

    def sites(self, change: Change, where: tuple[str, str]) -> list[Site]:
        """The places of `change`, made in the file `where` (repository, path)."""
        if change.kind == "removed":
            return self._move_sites(change, where)
        refs = [r for r in self.index.references(change.name) if self._wanted(r, change)]
        seen = Visibility.of(self.index, change, where)
        files = _by_file(refs)
        if change.kind == "rename" and seen is not None:  # imports and re-exports, unused
            for key in seen.importers:
                files.setdefault(key, [])
        found: list[Site] = []
        for (repo, path), group in files.items():
            found += self._file_sites(change, repo, path, group, seen)
        return self._pending(change, where, found) if change.kind == "signature" else found

    def forget(self, keep: set[tuple[str, str, str]]) -> None:
        """Drop what is remembered of changes no longer in `keep` (undone, or closed)."""
        for key in self._first.keys() - keep:
            del self._first[key]

    def _wanted(self, ref: StoredReference, change: Change) -> bool:
        if family(language_for(ref.path)) != family(change.old.language):
            return False
        if not self.allowed(ref.repo, ref.path):
            return False
        return change.kind == "rename" or ref.reference.kind == "call"

    def _file_sites(
        self,
        change: Change,
        repo: str,
        path: str,
        refs: list[StoredReference],
        seen: Visibility | None,
    ) -> list[Site]:
        file = self.index.absolute(repo, path)
        text = self._read(file) if file is not None else None
        bound = seen.bound_in(repo, path) if seen is not None else None
        if not self.allowed(repo, path) or file is None or text is None:
            return []
        if seen is not None and bound is None:
            return []
        source = self._source(file, text)
        points = [(r.reference.span.start_line, r.reference.span.start_col) for r in refs]
        if bound is not None:  # `x.name` is the changed name only where x names its module
            points = [p for p in points if source.receiver_in(p, bound.names)]
        if change.kind == "rename":
            assert change.new is not None
            ends = [(row, col + len(change.name)) for row, col in points]
            places = list(zip(points, ends, strict=True))
            places += source.import_names(change.name, bound.import_rows if bound else None)
            return [
                Site(repo, path, file, change, a, b, change.name, change.new.name)
                for a, b in sorted(set(places))
            ]
        found = [source.call_site(change, repo, path, p) for p in points]
        return [site for site in found if site is not None]

    def _source(self, file: Path, text: str) -> SourceFile:
        source = self._parsed.pop(file, None)
        if source is None or source.text != text:
            source = SourceFile(file, text)
        self._parsed[file] = source  # now the most recent
        if len(self._parsed) > PARSED_FILES:
            del self._parsed[next(iter(self._parsed))]
        return source

    def _read(self, file: Path) -> str | None:
        text = self.text_of(file)
        if text is not None:
            return text
        try:
            return file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def _pending(self, change: Change, where: tuple[str, str], found: list[Site]) -> list[Site]:
        """Calls whose arguments still bind as before, though to other parameters, stay
        flagged only while unchanged since the change was first seen."""
        key = (*where, f"{change.kind}:{change.old.qualified_name}")
        first = self._first.setdefault(key, {(s.repo, s.path, s.old_text) for s in found})
        return [s for s in found if _still_wrong(s, first)]

    def _move_sites(self, change: Change, where: tuple[str, str]) -> list[Site]:
        """A module-level definition gone from `where` and defined in another module of the
        same language: the imports of it from `where` follow (Python)."""
        if change.old.language != "python":
            return []
        moved = [
            s
            for s in self.index.definitions(change.name)
            if not s.definition.scope
            and (s.repo, s.path) != where
            and s.repo == where[0]
            and s.language == "python"
        ]
        if len(moved) != 1:
            return []  # deleted, or defined in several places: nothing certain to follow
        target = moved[0].path
        change = Change("removed", change.old, None, moved_to=target)
        found = []
        for repo, path in self.index.store.importers(*where):
            file = self.index.absolute(repo, path)
            text = self._read(file) if file is not None else None
            if file is None or text is None or not self.allowed(repo, path):
                continue
            source = self._source(file, text)
            for start, end, new_text in source.moved_imports(change.name, where[1], target):
                old = text_between(text, start, end)
                found.append(Site(repo, path, file, change, start, end, old, new_text))
        return found


def _still_wrong(site: Site, first: set[tuple[str, str, str]]) -> bool:
    if site.change.kind != "signature" or site.new_text is not None:
        return True
    return site.unbound or (site.repo, site.path, site.old_text) in first


def _by_file(refs: list[StoredReference]) -> dict[tuple[str, str], list[StoredReference]]:
    grouped: dict[tuple[str, str], list[StoredReference]] = {}
    for ref in refs:
        grouped.setdefault((ref.repo, ref.path), []).append(ref)
    return grouped


class SourceFile:
    """One file's text and syntax tree, in the CodeGraph's positions."""

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self.text = text
        self.language = language_for(file) or ""
        self.source = text.encode("utf-8", errors="surrogatepass")
        self.tree = parse(self.source, self.language)
        self._rows = parser_source(self.source).split(b"\n")  # the parser's rows: LSP lines

    def point(self, node_point: tree_sitter.Point | tuple[int, int]) -> Point:
        row, byte = node_point
        line = self._rows[row] if row < len(self._rows) else b""
        return row, len(line[:byte].decode("utf-8", errors="replace"))

    def node_at(self, at: Point) -> tree_sitter.Node | None:
        row, col = at
        line = self._rows[row] if row < len(self._rows) else b""
        byte = len(line.decode("utf-8", errors="replace")[:col].encode("utf-8"))
        return self.tree.root_node.named_descendant_for_point_range((row, byte), (row, byte))

    def lines_around(self, row: int, radius: int = 2) -> str:
        rows = split_lines(self.text)
        return "\n".join(rows[max(0, row - radius) : row + radius + 1])

    def call_site(self, change: Change, repo: str, path: str, at: Point) -> Site | None:
        """The call at `at` (its callee's name) when it does not fit the new definition: its
        arguments do not bind, bind to other parameters, or its await does not match."""
        node = self.node_at(at)
        call = _enclosing_call(node)
        new = change.new
        if call is None or new is None:
            return None
        start, end = self.point(call.start_point), self.point(call.end_point)
        old_text = _node_text(call)
        context = self.lines_around(start[0])
        if change.kind == "async":
            awaiter = (
                call.parent if call.parent is not None and call.parent.type in _AWAITS else None
            )
            if (awaiter is not None) == new.is_async:
                return None
            if awaiter is not None:
                a, b = self.point(awaiter.start_point), self.point(awaiter.end_point)
                return Site(repo, path, self.file, change, a, b, _node_text(awaiter), old_text)
            return Site(repo, path, self.file, change, start, end, old_text, "await " + old_text)
        verdict = fits(change.old, new, call_args(call))
        if verdict == "fits":
            return None
        unbound = verdict == "unbound"
        return Site(repo, path, self.file, change, start, end, old_text, None, context, unbound)

    def receiver_in(self, at: Point, names: set[str]) -> bool:
        """Is the name at `at` bare, or the member of a chain whose first name is in `names`
        (`geo.area`, `pkg.geo.area` with `geo` or `pkg` imported)?"""
        node = self.node_at(at)
        parent = node.parent if node is not None else None
        if parent is None or parent.type not in _RECEIVERS or parent.named_children[0] == node:
            return True
        root = parent.named_children[0]
        while root.type in _RECEIVERS and root.named_children:
            root = root.named_children[0]
        return _node_text(root) in names

    def import_names(self, name: str, rows: set[int] | None = None) -> list[tuple[Point, Point]]:
        """Where import statements and re-exports (those starting on `rows`, when given) name
        `name` (`from m import name`, `import {name}`, `export {name} from`)."""
        statements = (
            n
            for n in _walk(self.tree.root_node)
            if _imports(n) and (rows is None or n.start_point[0] in rows)
        )
        return [
            (self.point(n.start_point), self.point(n.end_point))
            for statement in statements
            for n in _walk(statement)
            if n.type == "identifier" and _node_text(n) == name and _imported_name(n)
        ]

    def moved_imports(
        self, name: str, old_path: str, new_path: str
    ) -> Iterator[tuple[Point, Point, str]]:
        """`from <old module> import name, ...` statements, rewritten to import `name` from the
        new module: (start, end, replacement)."""
        for node in _walk(self.tree.root_node):
            if node.type != "import_from_statement":
                continue
            module = node.child_by_field_name("module_name")
            names = [_imported(n) for n in node.children_by_field_name("name")]
            if module is None or name not in [n for n, _ in names]:
                continue
            written = _node_text(module)
            new_module = _module_like(written, old_path, new_path)
            if new_module is None:
                continue
            kept = [text for n, text in names if n != name]
            moved = next(text for n, text in names if n == name)
            lines = [f"from {written} import {', '.join(kept)}"] if kept else []
            indent = " " * node.start_point[1]
            lines.append(f"from {new_module} import {moved}")
            replacement = f"\n{indent}".join(lines)
            yield self.point(node.start_point), self.point(node.end_point), replacement


@dataclass(frozen=True)
class Bound:
    """What a file's imports of a module bind: the names a use may start with, and the rows of
    those import statements."""

    names: set[str]
    import_rows: set[int]


@dataclass
class Visibility:
    """Which files can mean a module-level name of one module, and how: Python and
    JavaScript/TypeScript files import the module (directly, or through a package that
    re-exports it); Go files import its package, or are in it."""

    index: WorkspaceIndex
    where: tuple[str, str]
    name: str
    stem: str
    importers: set[tuple[str, str]]
    """Files importing the module, or a package module that re-exports it."""

    @classmethod
    def of(cls, index: WorkspaceIndex, change: Change, where: tuple[str, str]) -> Visibility | None:
        """None where imports say nothing: a method (called on objects), no defining file."""
        if change.old.kind == "method" or change.old.scope or not where[1]:
            return None
        folder, _, name = where[1].rpartition("/")
        go = change.old.language == "go"
        stem = folder.rpartition("/")[2] if go else name.split(".")[0]
        importers = set(index.store.importers(*where))
        for repo, path in list(importers):
            if path.rpartition("/")[2].split(".")[0] in _PACKAGE_FILES:
                importers.update(index.store.importers(repo, path))
        return cls(index, where, change.name, stem, importers)

    def bound_in(self, repo: str, path: str) -> Bound | None:
        """What the file's imports of the module bind; an empty Bound in the module itself
        (or its Go package); None when the file does not import it."""
        same_package = self.where[1].rpartition("/")[0] == path.rpartition("/")[0]
        if (repo, path) == self.where or (same_package and path.endswith(".go")):
            return Bound(set(), set())
        names: set[str] = set()
        rows: set[int] = set()
        for item, target in self.index.store.imports_of(repo, path):
            parts = [p for p in re.split(r"[./]", item.module) if p]
            key = (target.repo, target.path) if target is not None else None
            module_itself = self.stem in item.names  # `from pkg import module`
            reexported = key in self.importers and self.name in item.names
            from_it = (parts and parts[-1] == self.stem) or reexported
            package = key is not None and key in self.importers and _package_module(key[1], item)
            if from_it or module_itself or package or key == self.where:
                names.update({item.alias, *parts[:1], *parts[-1:], *item.names} - {""})
            if from_it or (key == self.where and not module_itself):  # names what it defines
                rows.add(item.span.start_line if item.span is not None else -1)
        if not names and (repo, path) not in self.importers:
            return None
        return Bound(names, rows)


def _package_module(path: str, item: Import) -> bool:
    """Does `item` bind the package whose module file (`__init__`, `index`) is `path`, as a
    module (`from pkg import sub`, `import pkg.sub`), so that `sub.name` may be a name the
    package re-exports?"""
    folder, _, file = path.rpartition("/")
    if file.split(".")[0] not in _PACKAGE_FILES:
        return False
    package = folder.rpartition("/")[2]
    last = [part for part in re.split(r"[./]", item.module) if part][-1:]
    return package in item.names or last == [package]


def _imported(node: tree_sitter.Node) -> tuple[str, str]:
    """(name imported, as written) of one `from ... import` name (maybe `a as b`)."""
    target = node.child_by_field_name("name") if node.type == "aliased_import" else node
    return _node_text(target) if target is not None else "", _node_text(node)


def _imported_name(identifier: tree_sitter.Node) -> bool:
    """An identifier in an import that names what is imported (not the module, not an alias)."""
    parent = identifier.parent
    if parent is None:
        return False
    if parent.type == "dotted_name":
        statement = parent.parent
        if statement is not None and statement.type == "aliased_import":
            statement = statement.parent
        module = statement.child_by_field_name("module_name") if statement is not None else None
        return (
            statement is not None
            and statement.type == "import_from_statement"
            and (module is None or module.id != parent.id)
        )
    specifier = parent.type in ("import_specifier", "export_specifier")
    return specifier and parent.child_by_field_name("name") == identifier


def _imports(node: tree_sitter.Node) -> bool:
    """An import statement, or a re-export (`export {a} from "m"`)."""
    if node.type == "export_statement":
        return node.child_by_field_name("source") is not None
    return node.type in ("import_from_statement", "import_statement")


def _module_like(written: str, old_path: str, new_path: str) -> str | None:
    """The module name of `new_path`, written as `written` names `old_path` (absolute with
    the same leading folders dropped, or relative from the same folder)."""
    old_parts = _dotted(old_path)
    new_parts = _dotted(new_path)
    if written.startswith("."):
        same_folder = old_parts[:-1] == new_parts[:-1]
        return "." + new_parts[-1] if written.count(".") == 1 and same_folder else None
    parts = written.split(".")
    if old_parts[-len(parts) :] != parts:
        return None
    dropped = len(old_parts) - len(parts)
    return ".".join(new_parts[dropped:]) or None


def _dotted(path: str) -> list[str]:
    parts = path.removesuffix(".py").removesuffix(".pyi").split("/")
    return parts[:-1] if parts[-1] == "__init__" else parts


def _walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.named_children))


def _node_text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", errors="replace")


def _enclosing_call(node: tree_sitter.Node | None) -> tree_sitter.Node | None:
    """The call whose callee ends with `node` (the name in `f(...)`, `m.f(...)`, `new F()`)."""
    while node is not None and node.type not in _CALLS:
        if node.type in ("argument_list", "arguments", "block", "statement_block"):
            return None
        node = node.parent
    return node


def call_args(call: tree_sitter.Node) -> list[Arg] | None:
    """The arguments of a call; None when it has none written (`new F` without parentheses)."""
    arguments = call.child_by_field_name("arguments")
    if arguments is None:
        return None
    if arguments.type == "generator_expression":
        return [Arg(None)]
    found = []
    for node in arguments.named_children:
        if node.type == "comment":
            continue
        if node.type == "keyword_argument":
            name = node.child_by_field_name("name")
            found.append(Arg(_node_text(name) if name is not None else ""))
        else:
            found.append(Arg(None, any(s in node.type for s in _SPLATS)))
    if any(c.type == "..." for c in arguments.children):  # Go: f(xs...)
        found.append(Arg(None, True))
    return found


def bind(params: tuple[Param, ...], args: list[Arg]) -> list[str] | None:
    """The parameter each argument binds to, as Python binds a call; None when the call does
    not fit (too many or too few, an unknown or repeated keyword)."""
    positional = [p for p in params if p.kind in ("positional", "positional_only")]
    rest = any(p.kind == "rest" for p in params)
    rest_keywords = any(p.kind == "restkw" for p in params)
    keywords = {p.name for p in params if p.kind in ("positional", "keyword")}
    names: list[str] = []
    for arg in args:
        if arg.keyword is None:
            if len([n for n in names if n != "*"]) < len(positional) and not _after_keyword(
                args, arg
            ):
                names.append(positional[len([n for n in names if n != "*"])].name)
            elif rest:
                names.append("*")
            else:
                return None
        elif arg.keyword in keywords:
            if arg.keyword in names:
                return None  # given twice
            names.append(arg.keyword)
        elif rest_keywords:
            names.append("**")
        else:
            return None
    required = {p.name for p in params if not p.default and p.kind not in ("rest", "restkw")}
    return names if required <= set(names) else None


def _after_keyword(args: list[Arg], arg: Arg) -> bool:
    position = next(i for i, a in enumerate(args) if a is arg)
    return any(a.keyword is not None for a in args[:position])


def fits(old: Signature, new: Signature, args: list[Arg] | None) -> str:
    """fits, unbound (the call does not bind to `new`) or moved (it binds, but its arguments
    reach other parameters than they did under `old`)."""
    if args is None or new.params is None or any(a.splat for a in args):
        return "fits"  # nothing certain to say
    now = bind(new.params, args)
    if now is None:
        return "unbound"
    before = bind(old.params, args) if old.params is not None else None
    if before is None:
        return "fits"
    renamed = _renamed_params(old.params or (), new.params)
    return "moved" if [renamed.get(n, n) for n in before] != now else "fits"


def _renamed_params(old: tuple[Param, ...], new: tuple[Param, ...]) -> dict[str, str]:
    """Parameters renamed in place (same position, a name neither list had before)."""
    before, after = {p.name for p in old}, {p.name for p in new}
    return {
        a.name: b.name
        for a, b in zip(old, new, strict=False)
        if a.name != b.name and a.name not in after and b.name not in before
    }


def text_between(text: str, start: Point, end: Point) -> str:
    """The text between two points (LSP lines, code-point columns)."""
    return text[to_offset(text, *start) : to_offset(text, *end)]


def replace_between(text: str, start: Point, end: Point, new: str) -> str:
    return text[: to_offset(text, *start)] + new + text[to_offset(text, *end) :]


# --- writing the edits --------------------------------------------------------------------------


def call_request(site: Site) -> tuple[str, str]:
    """(system, user) asking the model to rewrite one call for the new signature: what changed
    in words and as a diff, the lines around the call, and what to do with its arguments."""
    old, new = site.change.old, site.change.new
    assert new is not None
    language = site.change.old.language
    diff = "\n".join(
        difflib.unified_diff([old.text], [new.text], "before", "after", lineterm="", n=0)
    )
    user = (
        f"The definition of `{old.name}` changed from `{old.text}` to `{new.text}`: "
        f"{site.message}.\n```diff\n{diff}\n```\n\n"
        f"This code in `{site.path}` calls it the old way:\n"
        f"```{language}\n{site.context}\n```\n\n"
        "Update the call to match the new definition: keep its arguments, add a value for "
        "each new required parameter, and move or drop arguments as the change requires.\n"
        f"Old call:\n```{language}\n{site.old_text}\n```\n"
        f"Reply with only the updated call in one ```{language} block."
    )
    return SYSTEM, user


async def write_call(assistant: Assistant, site: Site, text: str, key: str) -> str | None:
    """The new text of a site: a rename's, move's or await's as found; a call's as the model
    rewrites it, kept when `text` (the site's file) still parses with it and the call binds to
    the new signature; None otherwise."""
    if site.new_text is not None:
        return site.new_text
    system, user = call_request(site)
    answer = await assistant.instruct(key, system, user, max_tokens=MODEL_TOKENS)
    return checked_call(site, answer.text, text)


def checked_call(site: Site, answer: str, text: str) -> str | None:
    """The call in the model's answer, when it fits: a call to the same name that parses in
    place of the old one in `text` and binds to the new signature."""
    verdict, rewritten = check_call(site, answer, text)
    return rewritten if verdict == "ok" else None


def check_call(site: Site, answer: str, text: str) -> tuple[str, str | None]:
    """(verdict, the call from the answer): ok; no call (none to the same name); no parse (it,
    or the file with it in place, has more syntax errors); wrong arity (it does not bind to the
    new signature)."""
    code = (fenced_code(answer) or answer).strip()
    new = site.change.new
    source = SourceFile(site.file, code)
    calls = [n for n in _walk(source.tree.root_node) if n.type in _CALLS]
    call = calls[0] if calls else None
    callee = call and (
        call.child_by_field_name("function") or call.child_by_field_name("constructor")
    )
    if call is None or callee is None or not _node_text(callee).endswith(site.change.name):
        return "no call", None
    rewritten = _node_text(call)
    edited = replace_between(text, site.start, site.end, rewritten)
    language = site.change.old.language
    if source.tree.root_node.has_error or testgen.parse_errors(
        edited, language
    ) > testgen.parse_errors(text, language):
        return "no parse", rewritten
    args = call_args(call)
    if new is None or new.params is None or args is None or bind(new.params, args) is None:
        return "wrong arity", rewritten
    return "ok", rewritten
