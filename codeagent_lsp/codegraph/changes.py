"""Changes to definitions that propagate to their uses: renames, parameters added, removed,
renamed or reordered, a parameter that became required, async toggled, a constructor changed,
a definition moved to another module.

Signatures are read from tree-sitter trees (Python, JavaScript, TypeScript, TSX, Go). A
`ChangeTracker` keeps, per open document, the signatures it had when it was opened (the
baseline the rest of the workspace was written against) and its last state that parsed: a
definition with a syntax error keeps its last good signature, so typing inside it fires
nothing half-way. Positions are 0-based rows and code-point columns, as in the CodeGraph.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import tree_sitter

from codeagent_lsp.codegraph.extract import parse

LANGUAGES = frozenset({"python", "javascript", "typescript", "tsx", "go"})
"""Languages whose signatures are read; others have no change detection."""

_FUNCTIONS = frozenset(
    {"function_definition", "function_declaration", "method_definition", "method_declaration"}
)
_CLASSES = frozenset({"class_definition", "class_declaration"})
_ANONYMOUS = frozenset({"arrow_function", "function_expression", "function"})
_CONSTRUCTORS = frozenset({"__init__", "constructor"})
_REST = ("list_splat_pattern", "rest_pattern", "variadic_parameter_declaration")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str = "positional"
    """positional (by position or keyword), keyword (keyword only), rest (*args, ...rest,
    Go's ...T), restkw (**kwargs), positional_only (before Python's /)."""
    default: bool = False
    """Has a default (or is optional): a call may leave it out."""


@dataclass(frozen=True)
class Signature:
    name: str
    qualified_name: str
    kind: str
    """function, method, class or constant."""
    language: str
    text: str
    """The declaration line as written (one line, whitespace collapsed)."""
    params: tuple[Param, ...] | None = None
    """What a call passes (a class: its constructor's, without self); None when unknown
    (a class without a constructor, a constant)."""
    is_async: bool = False
    line: int = 0
    scope: str = ""


@dataclass(frozen=True)
class Change:
    """One propagating change of a definition, from `old` (the baseline) to `new`."""

    kind: str
    """rename, signature, async or removed (a move, once the feature finds where it went)."""
    old: Signature
    new: Signature | None
    moved_to: str = ""
    """For a move: the module (file path relative to its repository) that now defines it."""

    @property
    def name(self) -> str:
        """The name the uses to update are written with."""
        return self.old.name

    def sentence(self) -> str:
        """What changed, in a sentence for a diagnostic (e.g. "`area` now takes `unit`
        (after `height`)")."""
        old, new = self.old, self.new
        if self.kind == "rename" and new is not None:
            return f"`{old.name}` was renamed to `{new.name}`"
        if self.kind == "removed":
            where = f" to `{self.moved_to}`" if self.moved_to else ""
            return f"`{old.name}` moved{where}"
        if self.kind == "async" and new is not None:
            return f"`{old.name}` is {'now' if new.is_async else 'no longer'} async"
        return "; ".join(_param_changes(old, new)) or f"`{old.name}` changed"


def _param_changes(old: Signature, new: Signature | None) -> list[str]:
    if new is None or old.params is None or new.params is None:
        return []
    subject = f"the constructor of `{old.name}`" if old.kind == "class" else f"`{old.name}`"
    before = [p.name for p in old.params]
    after = [p.name for p in new.params]
    said: list[str] = []
    if len(before) == len(after) and set(before) != set(after):
        for was, now in zip(before, after, strict=True):
            if was != now:
                said.append(f"{subject}'s parameter `{was}` is now `{now}`")
        return said
    for index, param in enumerate(new.params):
        if param.name in before:
            continue
        place = f"after `{after[index - 1]}`" if index else "first"
        needs = "now requires" if _required(param) else "now takes"
        said.append(f"{subject} {needs} `{param.name}` ({place})")
    said += [f"{subject} no longer takes `{name}`" for name in before if name not in after]
    kept_before = [n for n in before if n in after]
    kept_after = [n for n in after if n in before]
    if kept_before != kept_after:
        said.append(f"{subject} now takes ({', '.join(kept_after)}) in that order")
    was_optional = {p.name for p in old.params if not _required(p)}
    for param in new.params:
        if param.name in was_optional and _required(param):
            said.append(f"`{param.name}` of {subject} is now required")
    return said


def _required(param: Param) -> bool:
    return not param.default and param.kind not in ("rest", "restkw")


# --- reading signatures -----------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """The signatures of one text, by qualified name, and the names whose definition holds a
    syntax error (their signature is not to be trusted)."""

    signatures: dict[str, Signature]
    broken: frozenset[str]
    has_errors: bool


def read(source: bytes, language: str, tree: tree_sitter.Tree | None = None) -> Read:
    """The signatures of the functions, methods, classes (their constructors) and module-level
    constants of `source`; an empty Read for a language without signature support."""
    if language not in LANGUAGES:
        return Read({}, frozenset(), False)
    tree = tree or parse(source, language)
    signatures: dict[str, Signature] = {}
    broken: set[str] = set()
    for node, scope in _definitions(tree.root_node, ""):
        signature = _signature(node, scope, language, source)
        if signature is None or signature.name in _CONSTRUCTORS:
            continue  # a constructor's changes are its class's
        signatures.setdefault(signature.qualified_name, signature)
        if node.has_error:
            broken.add(signature.qualified_name)
    return Read(signatures, frozenset(broken), tree.root_node.has_error)


def _definitions(node: tree_sitter.Node, scope: str) -> Iterator[tuple[tree_sitter.Node, str]]:
    """Definition nodes with their enclosing class names, not looking into function bodies
    (locals do not propagate)."""
    for child in node.named_children:
        kind = child.type
        if kind in _FUNCTIONS or kind in _CLASSES or _bound_function(child) is not None:
            yield child, scope
            if kind in _CLASSES:
                name = _name(child)
                body = child.child_by_field_name("body")
                if body is not None and name:
                    yield from _definitions(body, f"{scope}.{name}" if scope else name)
        elif kind in ("expression_statement", "assignment") and not scope:
            yield child, scope
        elif kind in ("decorated_definition", "export_statement", "lexical_declaration"):
            yield from _definitions(child, scope)


def _bound_function(node: tree_sitter.Node) -> tree_sitter.Node | None:
    """`const f = (a) => ...`: the function a variable declarator binds, else None."""
    if node.type != "variable_declarator":
        return None
    value = node.child_by_field_name("value")
    return value if value is not None and value.type in _ANONYMOUS else None


def _name(node: tree_sitter.Node) -> str:
    name = node.child_by_field_name("name")
    return _text(name) if name is not None else ""


def _text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", errors="replace")


def _signature(
    node: tree_sitter.Node, scope: str, language: str, source: bytes
) -> Signature | None:
    kind = "class" if node.type in _CLASSES else "function"
    function = _bound_function(node) or node
    if node.type in ("expression_statement", "assignment"):
        return _constant(node, language)
    name = _name(node)
    if not name:
        return None
    if (scope and kind == "function") or node.type == "method_declaration":
        kind = "method"  # Go's methods are declared outside their type
    params = _constructor_params(node, language) if kind == "class" else _params(function)
    if kind == "method" and language == "python" and params and params[0].name in ("self", "cls"):
        params = params[1:]
    body = function.child_by_field_name("body")
    end = body.start_byte if body is not None else function.end_byte
    text = " ".join(source[node.start_byte : end].decode("utf-8", errors="replace").split())
    return Signature(
        name=name,
        qualified_name=f"{scope}.{name}" if scope else name,
        kind=kind,
        language=language,
        text=text.rstrip(":{ "),
        params=params,
        is_async=any(c.type == "async" for c in function.children),
        line=node.start_point[0],
        scope=scope,
    )


def _constant(node: tree_sitter.Node, language: str) -> Signature | None:
    """A module-level Python assignment to an upper-case name (what may move between modules)."""
    assignment = node.named_children[0] if node.type == "expression_statement" else node
    if language != "python" or assignment is None or assignment.type != "assignment":
        return None
    left = assignment.child_by_field_name("left")
    name = _text(left) if left is not None and left.type == "identifier" else ""
    if not name or not name.strip("_")[:1].isupper():
        return None
    text = " ".join(_text(node).split())[:120]
    return Signature(name, name, "constant", language, text, line=node.start_point[0])


def _constructor_params(node: tree_sitter.Node, language: str) -> tuple[Param, ...] | None:
    body = node.child_by_field_name("body")
    for child in body.named_children if body is not None else ():
        function = child.child_by_field_name("definition") or child
        if function.type in _FUNCTIONS and _name(function) in _CONSTRUCTORS:
            params = _params(function) or ()
            return params[1:] if language == "python" and params else params
    return None


def _params(function: tree_sitter.Node) -> tuple[Param, ...] | None:
    parameters = function.child_by_field_name("parameters")
    if parameters is None:
        return None
    found: list[Param] = []
    keyword_only = False
    for node in parameters.named_children:
        if node.type == "comment":
            continue
        if node.type == "keyword_separator":
            keyword_only = True
            continue
        if node.type == "positional_separator":
            found = [replace(p, kind="positional_only") for p in found]
            continue
        param = _param(node, keyword_only)
        keyword_only = keyword_only or param[0].kind == "rest"
        found += param
    return tuple(found)


def _param(node: tree_sitter.Node, keyword_only: bool) -> list[Param]:
    """One parameter node as Params (Go declares several names in one: `w, h float64`)."""
    kind = "keyword" if keyword_only else "positional"
    default = "default" in node.type or node.type == "optional_parameter"
    default = default or node.child_by_field_name("value") is not None
    if node.type == "dictionary_splat_pattern":
        kind = "restkw"
    elif node.type in _REST or any(c.type in _REST for c in node.named_children):
        kind = "rest"
    if node.type == "identifier":
        return [Param(_text(node), kind, default)]
    names = node.children_by_field_name("name")
    if names:
        return [Param(_text(n), kind, default) for n in names]
    pattern = node.child_by_field_name("pattern")
    holder = pattern if pattern is not None else node
    identifier = _first_identifier(holder)
    return [Param(_text(identifier) if identifier is not None else _text(node), kind, default)]


def _first_identifier(node: tree_sitter.Node) -> tree_sitter.Node | None:
    if node.type == "identifier":
        return node
    for child in node.named_children:
        found = _first_identifier(child)
        if found is not None:
            return found
    return None


# --- comparing ----------------------------------------------------------------------------------


def diff(before: dict[str, Signature], after: dict[str, Signature]) -> list[Change]:
    """The propagating changes from `before` to `after` (signatures by qualified name). A
    definition gone and one new of the same kind and scope, in the same order, is a rename;
    one gone without a successor is `removed` (a move, when it is found elsewhere)."""
    changes: list[Change] = []
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            continue
        if old.kind != new.kind:
            continue
        if old.is_async != new.is_async:
            changes.append(Change("async", old, new))
        if old.params != new.params and _param_changes(old, new):
            changes.append(Change("signature", old, new))
    gone = [s for n, s in before.items() if n not in after]
    added = [s for n, s in after.items() if n not in before]
    for old in sorted(gone, key=lambda s: s.line):
        successor = _successor(old, gone, added)
        if successor is not None:
            added.remove(successor)
            changes.append(Change("rename", old, successor))
        elif not old.scope:
            changes.append(Change("removed", old, None))
    return changes


def _successor(old: Signature, gone: list[Signature], added: list[Signature]) -> Signature | None:
    """The new definition `old` was renamed to: of its kind and scope, and the same rank among
    the gone ones as among the new ones (so two renames in one pause pair up in order)."""

    def same(s: Signature) -> bool:
        return (s.kind, s.scope) == (old.kind, old.scope)

    peers_gone = [s for s in sorted(gone, key=lambda s: s.line) if same(s)]
    peers_new = [s for s in sorted(added, key=lambda s: s.line) if same(s)]
    if not peers_new:
        return None
    rank = peers_gone.index(old)
    return peers_new[min(rank, len(peers_new) - 1)]


@dataclass
class _Document:
    baseline: dict[str, Signature]
    current: dict[str, Signature]
    changes: list[Change] = field(default_factory=list)


class ChangeTracker:
    """Per open document: its signatures when opened and its changes since, as they parse."""

    def __init__(self) -> None:
        self._documents: dict[str, _Document] = {}
        self._lock = threading.Lock()

    def update(
        self, key: str, source: bytes, language: str, tree: tree_sitter.Tree | None = None
    ) -> list[Change] | None:
        """The document's changes against its baseline after this text (`tree`: its syntax
        tree, when the caller has it), or None when they are the same as before (nothing to
        publish). The first text is the baseline."""
        now = read(source, language, tree)
        with self._lock:
            document = self._documents.get(key)
            if document is None:
                self._documents[key] = _Document(now.signatures, now.signatures)
                return None
            current = _merge(document.current, now)
            changes = diff(document.baseline, current)
            document.current = current
            if changes == document.changes:
                return None
            document.changes = changes
            return changes

    def changes(self) -> dict[str, list[Change]]:
        """Every open document's changes (those with any), by key."""
        with self._lock:
            return {k: list(d.changes) for k, d in self._documents.items() if d.changes}

    def forget(self, key: str) -> bool:
        """The document closed; True when it had changes (their flags must be cleared)."""
        with self._lock:
            document = self._documents.pop(key, None)
        return bool(document and document.changes)


def _merge(last: dict[str, Signature], now: Read) -> dict[str, Signature]:
    """The signatures to compare: the new ones where their definition parses; the last good
    one where it does not. While the text has errors, no definition is taken as gone or new
    (tree-sitter may have lost it in the error), only signatures of known names change."""
    if now.has_errors:
        merged = dict(last)
        for name, signature in now.signatures.items():
            if name in last and name not in now.broken:
                merged[name] = signature
        return merged
    return dict(now.signatures)
