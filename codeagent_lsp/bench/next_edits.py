"""`codeagent-lsp bench next-edits --repo PATH`: how well next edits find the places a change
affects, how fast, and how often the model's rewrite of a call parses and fits.

Functions defined at module level with call sites in at least two files are drawn with a fixed
seed; each gets scripted changes of its definition (rename, a parameter added with and without
a default, the first two parameters swapped, made async), applied to the text of an open
document as an editor would send it. What was flagged is compared with a truth computed from
Python's own `ast` over the whole repository: imports and attribute chains resolved by hand
(below), and for a call, `inspect.Signature.bind` of the old and new signature deciding whether
it still fits (for a parameter change, calls that pass `*args` or `**kwargs` are left out of
both sides: nothing certain can be said of them). With `language="typescript"` the cases and
their truth come from the TypeScript compiler instead (bench/next_edits_ts). The time is from
the new text to the places found (the CodeGraph update, the detection and the search), without
the editor's pause (0.3 s) and the transport.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from codeagent_lsp.bench.edit_cases import Case, Place, ToolMissing
from codeagent_lsp.bench.next_edits_ts import typescript_cases
from codeagent_lsp.codegraph.changes import ChangeTracker
from codeagent_lsp.codegraph.languages import language_for
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.nextedits import Finder, Site, call_request, check_call
from codeagent_lsp.settings import Settings

KINDS = ("rename", "add-required", "add-default", "reorder", "async")


@dataclass(frozen=True)
class Module:
    path: str
    name: str
    tree: ast.Module
    text: str


@dataclass(frozen=True)
class Use:
    """A place that refers to a function (ast's truth)."""

    place: Place
    """Where the name is written."""
    call: ast.Call | None
    call_place: Place | None = None
    awaited: bool = False
    await_place: Place | None = None


@dataclass(frozen=True)
class Target:
    module: Module
    node: ast.FunctionDef | ast.AsyncFunctionDef
    uses: tuple[Use, ...]


def run_next_edits_bench(
    repo: Path,
    functions: int,
    seed: int,
    settings: Settings,
    model_sites: int = 0,
    progress: Callable[[str], None] | None = None,
    language: str = "python",
) -> dict[str, object]:
    """The figures (see the module's docstring) for `functions` functions of `repo` drawn with
    `seed`; `language` python (truth from `ast`) or typescript (from the TypeScript compiler,
    bench/next_edits_ts; without it the figures are None and `error` says why)."""
    say = progress or (lambda _m: None)
    root = repo.expanduser().resolve()
    result: dict[str, object] = {"repo": str(root), "language": language, "seed": seed}
    with tempfile.TemporaryDirectory() as cache:
        codegraph = dataclasses.replace(settings.codegraph, cacheDir=cache)
        index = WorkspaceIndex([(root.name, root)], codegraph)
        try:
            index.index_all()
            # The truth covers what the CodeGraph indexes (not generated or vendored files).
            indexed = {f.path for f in index.store.files()}
            if language == "typescript":
                chosen, about = typescript_cases(root, indexed, functions, seed, say)
            else:
                chosen, about = _python_cases(root, indexed, functions, seed, say)
            result.update(about)
            tallies, (timings, cpu), sites = _measure(index, root, chosen, say)
        except ToolMissing as missing:
            return {**result, "functions": 0, "all": None, "p50_ms": None, "error": str(missing)}
        finally:
            index.close()
    result.update(
        {
            "functions": len(chosen),
            "kinds": {k: _rates(t) for k, t in tallies.items()},
            "all": _rates(sum(tallies.values(), Counter())),
            "p50_ms": round(statistics.median(timings), 1) if timings else None,
            "p90_ms": round(_quantile(timings, 0.9), 1) if timings else None,
            "cpu_p50_ms": round(statistics.median(cpu), 1) if cpu else None,
            "cpu_p90_ms": round(_quantile(cpu, 0.9), 1) if cpu else None,
        }
    )
    if model_sites and sites:
        result["model"] = asyncio.run(_model_edits(settings, sites[:model_sites], say))
    return result


def _python_cases(
    root: Path, indexed: set[str], functions: int, seed: int, say: Callable[[str], None]
) -> tuple[list[Case], dict[str, object]]:
    parsed = _modules(root)
    modules = {path: m for path, m in parsed.items() if path in indexed}
    targets = _targets(modules)
    chosen = random.Random(seed).sample(targets, min(functions, len(targets)))
    say(f"{len(modules)} modules, {len(targets)} functions used in two files or more")
    cases = []
    for target in chosen:
        changes = {}
        for kind in KINDS:
            edited = _edit(target, kind)
            if edited is not None:
                changes[kind] = (edited, _truth(target, kind, edited))
        cases.append(Case(target.module.path, target.node.name, target.module.text, changes))
    return cases, {"modules": len(modules), "not_indexed": len(parsed) - len(modules)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _rates(tally: Counter[str]) -> dict[str, object]:
    found, true, hit = tally["flagged"], tally["truth"], tally["hit"]
    return {
        "truth": true,
        "flagged": found,
        "hit": hit,
        "recall": round(hit / true, 3) if true else None,
        "precision": round(hit / found, 3) if found else None,
    }


# --- the scripted changes -----------------------------------------------------------------------


def _measure(
    index: WorkspaceIndex, root: Path, chosen: list[Case], say: Callable[[str], None]
) -> tuple[dict[str, Counter[str]], tuple[list[float], list[float]], list[tuple[Site, str]]]:
    tracker = ChangeTracker()
    finder = Finder(index, lambda _p: None, lambda _r, _p: True)
    tallies: dict[str, Counter[str]] = {}
    timings: list[float] = []
    cpu_timings: list[float] = []
    model_sites: list[tuple[Site, str]] = []
    for number, case in enumerate(chosen, 1):
        path = root / case.path
        language = language_for(path) or ""
        tracker.update(str(path), case.text.encode(), language)
        for kind, (edited, truth) in case.changes.items():
            started, cpu = time.perf_counter(), time.process_time()
            index.document_changed(path, edited)
            source = edited.encode()
            tree = index.live.tree(str(path), source)
            changes = tracker.update(str(path), source, language, tree) or []
            where = (root.name, case.path)
            flagged = [s for c in changes if c.name == case.name for s in finder.sites(c, where)]
            timings.append((time.perf_counter() - started) * 1000)
            cpu_timings.append((time.process_time() - cpu) * 1000)
            mine = {_place(s, kind) for s in flagged}
            tallies.setdefault(kind, Counter()).update(
                truth=len(truth), flagged=len(mine), hit=len(truth & mine)
            )
            if kind == "add-required":
                model_sites += [(s, _text(root, s.path)) for s in flagged if s.new_text is None]
            index.document_changed(path, case.text)
            tracker.update(str(path), case.text.encode(), language)
            finder.forget(set())
        say(f"{number}/{len(chosen)} {case.path}:{case.name}")
    return tallies, (timings, cpu_timings), model_sites


def _text(root: Path, path: str) -> str:
    return (root / path).read_text(encoding="utf-8", errors="replace")


def _place(site: Site, kind: str) -> Place:
    return site.path, site.start[0], site.start[1]


def _edit(target: Target, kind: str) -> str | None:
    """The defining module's text with the scripted change, or None when it does not apply
    (reorder needs two leading parameters of the same kind of default)."""
    node, lines = target.node, target.module.text.split("\n")
    row = node.lineno - 1  # the `def` line, below any decorator
    line = lines[row]
    if kind == "rename":
        lines[row] = line.replace(f"def {node.name}(", f"def {node.name}_next(", 1)
    elif kind == "async":
        if isinstance(node, ast.AsyncFunctionDef):
            lines[row] = line.replace("async def ", "def ", 1)
        else:
            lines[row] = line.replace("def ", "async def ", 1)
    else:
        return _edit_parameters(target, kind)
    return "\n".join(lines)


def _edit_parameters(target: Target, kind: str) -> str | None:
    source = target.module.text.encode()
    args = target.node.args
    regular = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(regular) - len(args.defaults)) + list(args.defaults)
    spans = [_span(source, a, d) for a, d in zip(regular, defaults, strict=True)]
    if kind == "reorder":
        if len(regular) < 2 or (defaults[0] is None) != (defaults[1] is None) or args.posonlyargs:
            return None
        (a_start, a_end), (b_start, b_end) = spans[0], spans[1]
        first, second = source[a_start:a_end], source[b_start:b_end]
        edited = source[:a_start] + second + source[a_end:b_start] + first + source[b_end:]
        return edited.decode()
    # A required parameter goes after the last one without a default (after one with a
    # default it would be a syntax error); one with a default after the last positional one.
    required = kind == "add-required"
    new = b"extra_param" if required else b"extra_param=None"
    before = spans[: len(regular) - len(args.defaults)] if required else spans
    if before:
        at = before[-1][1]
        return (source[:at] + b", " + new + source[at:]).decode()
    opening = source.index(b"(", _offset(source, target.node.lineno, target.node.col_offset))
    rest = b", " if (regular or args.vararg or args.kwonlyargs or args.kwarg) else b""
    return (source[: opening + 1] + new + rest + source[opening + 1 :]).decode()


def _span(source: bytes, arg: ast.arg, default: ast.expr | None) -> tuple[int, int]:
    end = default if default is not None else arg
    assert end.end_lineno is not None and end.end_col_offset is not None
    start = _offset(source, arg.lineno, arg.col_offset)
    return start, _offset(source, end.end_lineno, end.end_col_offset)


def _offset(source: bytes, lineno: int, col: int) -> int:
    """Byte offset of ast's (1-based line, UTF-8 byte column)."""
    at = 0
    for _ in range(lineno - 1):
        at = source.index(b"\n", at) + 1
    return at + col


# --- the truth, from ast -------------------------------------------------------------------------


def _modules(root: Path) -> dict[str, Module]:
    found = {}
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        if any(part.startswith(".") or part in ("test", "tests") for part in rel.split("/")):
            continue
        try:
            text = file.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        package = [root.name] if (root / "__init__.py").is_file() else []  # else a source root
        dotted = [*package, *rel.removesuffix(".py").split("/")]
        if dotted[-1] == "__init__":
            dotted.pop()
        found[rel] = Module(rel, ".".join(dotted), tree, text)
    return found


def _targets(modules: dict[str, Module]) -> list[Target]:
    """Module-level functions whose name is defined once in the repository, with uses in two
    files or more."""
    names = Counter(
        n.name
        for m in modules.values()
        for n in ast.walk(m.tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    )
    uses = _all_uses(modules)
    found = []
    for module in modules.values():
        for node in module.tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            mine = uses.get((module.name, node.name), [])
            calls = [u for u in mine if u.call is not None]
            if names[node.name] == 1 and len({u.place[0] for u in calls}) >= 2:
                found.append(Target(module, node, tuple(mine)))
    return found


def _all_uses(modules: dict[str, Module]) -> dict[tuple[str, str], list[Use]]:
    """Every reference to a module-level name (module, name), resolved through the imports
    and through the packages that re-export it."""
    known = {m.name for m in modules.values()}
    bindings = {m.name: _bindings(m, _package(m), known) for m in modules.values()}

    def origin(target: tuple[str, str]) -> tuple[str, str]:
        for _ in range(10):  # a re-export of a re-export...
            bound = bindings.get(target[0], {}).get(target[1])
            if bound is None or bound[1] is None:
                break
            target = (bound[0], bound[1])
        return target

    found: dict[tuple[str, str], list[Use]] = {}
    for module in modules.values():
        for target, use in _module_uses(module, bindings[module.name], known):
            found.setdefault(origin(target), []).append(use)
    return found


def _package(module: Module) -> str:
    if module.path.endswith("__init__.py"):
        return module.name
    return module.name.rpartition(".")[0]


def _module_uses(
    module: Module, bindings: dict[str, tuple[str, str | None]], known: set[str]
) -> Iterator[tuple[tuple[str, str], Use]]:
    rows = module.text.split("\n")
    awaited = {id(n.value): n for n in ast.walk(module.tree) if isinstance(n, ast.Await)}
    calls = {id(n.func): n for n in ast.walk(module.tree) if isinstance(n, ast.Call)}
    for node in _loads(module.tree, frozenset()):
        target = _resolve(node, module.name, bindings, known)
        if target is None:
            continue
        call = calls.get(id(node))
        place = _name_place(module.path, rows, node)
        call_place = _place_of(module.path, rows, call) if call is not None else None
        waiter = awaited.get(id(call)) if call is not None else None
        await_place = _place_of(module.path, rows, waiter) if waiter is not None else None
        yield target, Use(place, call, call_place, waiter is not None, await_place)
    for statement in ast.walk(module.tree):
        if isinstance(statement, ast.ImportFrom):
            base = _base(statement, _package(module))
            for alias in statement.names:
                if f"{base}.{alias.name}" not in known:
                    column = _col(rows, alias.lineno, alias.col_offset)
                    yield (base, alias.name), Use((module.path, alias.lineno - 1, column), None)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _loads(node: ast.AST, local: frozenset[str]) -> Iterator[ast.Name | ast.Attribute]:
    """Name and Attribute loads that may name a module-level name: not a Name (or the root of
    an attribute chain) bound in the enclosing function or comprehension."""
    if isinstance(node, _SCOPES):
        outer = [*getattr(node, "decorator_list", []), *node.args.defaults]
        outer += [d for d in node.args.kw_defaults if d is not None]
        for child in outer:
            yield from _loads(child, local)
        inner = local | _bound(node)
        for child in node.body if isinstance(node.body, list) else [node.body]:
            yield from _loads(child, inner)
        return
    if isinstance(node, _COMPREHENSIONS):
        targets = (n for g in node.generators for n in ast.walk(g.target))
        local = local | {n.id for n in targets if isinstance(n, ast.Name)}
    if isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
        root: ast.expr = node
        while isinstance(root, ast.Attribute):
            root = root.value
        if not (isinstance(root, ast.Name) and root.id in local):
            yield node
    for child in ast.iter_child_nodes(node):
        yield from _loads(child, local)


def _bound(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> frozenset[str]:
    """The names local to a function: its parameters and what its body assigns (not nested
    functions' bodies), less those declared global. Imports in a function resolve through the
    module's bindings (`_bindings` reads them all)."""
    args = function.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    names = {a.arg for a in every if a is not None}
    declared: set[str] = set()
    stack: list[ast.AST] = list(function.body) if isinstance(function.body, list) else []
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            continue
        elif isinstance(node, ast.Global | ast.Nonlocal):
            declared.update(node.names)
        elif isinstance(node, ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return frozenset(names - declared)


def _bindings(module: Module, package: str, known: set[str]) -> dict[str, tuple[str, str | None]]:
    """Local name -> (module, None) for a module, (module, name) for a name imported from one."""
    bound: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = (alias.name, None)
                else:
                    head = alias.name.split(".")[0]
                    bound[head] = (head, None)
        elif isinstance(node, ast.ImportFrom):
            base = _base(node, package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                local = alias.asname or alias.name
                bound[local] = (full, None) if full in known else (base, alias.name)
    return bound


def _base(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join([*parts, node.module] if node.module else parts)


def _resolve(
    node: ast.AST, here: str, bindings: dict[str, tuple[str, str | None]], known: set[str]
) -> tuple[str, str] | None:
    """The (module, name) a Name or Attribute load refers to, if it is a module-level name."""
    if isinstance(node, ast.Name):
        bound = bindings.get(node.id)
        if bound is None:
            return here, node.id
        return (bound[0], bound[1]) if bound[1] is not None else None
    if isinstance(node, ast.Attribute):
        module = _module_of(node.value, bindings, known)
        return (module, node.attr) if module is not None else None
    return None


def _module_of(
    node: ast.expr, bindings: dict[str, tuple[str, str | None]], known: set[str]
) -> str | None:
    if isinstance(node, ast.Name):
        bound = bindings.get(node.id)
        return bound[0] if bound is not None and bound[1] is None else None
    if isinstance(node, ast.Attribute):
        parent = _module_of(node.value, bindings, known)
        dotted = f"{parent}.{node.attr}" if parent else None
        return dotted if dotted in known else None
    return None


def _col(rows: list[str], lineno: int, byte_col: int) -> int:
    return len(rows[lineno - 1].encode()[:byte_col].decode(errors="replace"))


def _place_of(path: str, rows: list[str], node: ast.expr) -> Place:
    return path, node.lineno - 1, _col(rows, node.lineno, node.col_offset)


def _name_place(path: str, rows: list[str], node: ast.AST) -> Place:
    """Where the name itself is written: a Name's start, an Attribute's last part."""
    assert isinstance(node, ast.Name | ast.Attribute)
    if isinstance(node, ast.Name):
        return _place_of(path, rows, node)
    assert node.end_lineno is not None and node.end_col_offset is not None
    end = _col(rows, node.end_lineno, node.end_col_offset)
    return path, node.end_lineno - 1, end - len(node.attr)


def _truth(target: Target, kind: str, edited: str) -> set[Place]:
    """The places the change affects, by ast and inspect."""
    if kind == "rename":
        return {u.place for u in target.uses}
    calls = [u for u in target.uses if u.call is not None]
    if kind == "async":  # awaited or not, whatever the arguments
        now_async = not isinstance(target.node, ast.AsyncFunctionDef)
        return {
            (u.await_place or u.place) if u.awaited else u.call_place or u.place
            for u in calls
            if u.awaited != now_async
        }
    new_node = next(
        n
        for n in ast.parse(edited).body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == target.node.name
    )
    old, new = _signature(target.node.args), _signature(new_node.args)
    decidable = [u for u in calls if u.call is not None and not _splat(u.call)]
    return {u.call_place or u.place for u in decidable if u.call and _breaks(old, new, u.call)}


def _splat(call: ast.Call) -> bool:
    return any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    )


def _signature(args: ast.arguments) -> inspect.Signature:
    kind = inspect.Parameter
    regular = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(regular) - len(args.defaults)) + list(args.defaults)
    params = [
        kind(
            a.arg,
            kind.POSITIONAL_ONLY if i < len(args.posonlyargs) else kind.POSITIONAL_OR_KEYWORD,
            default=kind.empty if d is None else None,
        )
        for i, (a, d) in enumerate(zip(regular, defaults, strict=True))
    ]
    if args.vararg:
        params.append(kind(args.vararg.arg, kind.VAR_POSITIONAL))
    for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append(kind(a.arg, kind.KEYWORD_ONLY, default=kind.empty if d is None else None))
    if args.kwarg:
        params.append(kind(args.kwarg.arg, kind.VAR_KEYWORD))
    return inspect.Signature(params)


def _breaks(old: inspect.Signature, new: inspect.Signature, call: ast.Call) -> bool:
    """The call does not bind to `new`, or its arguments reach other parameters than under
    `old`."""
    positional = [f"#{i}" for i in range(len(call.args))]
    keywords = {k.arg: f"={k.arg}" for k in call.keywords if k.arg}
    try:
        now = new.bind(*positional, **keywords).arguments
    except TypeError:
        return True
    try:
        before = old.bind(*positional, **keywords).arguments
    except TypeError:
        return False
    return _receivers(before) != _receivers(now)


def _receivers(arguments: dict[str, object]) -> dict[str, str]:
    """Argument label -> the parameter it reaches (*args and **kwargs unpacked)."""
    found = {}
    for param, value in arguments.items():
        if isinstance(value, dict):
            labels = list(value.values())
        elif isinstance(value, tuple):
            labels = list(value)
        else:
            labels = [value]
        for label in labels:
            found[str(label)] = param
    return found


# --- the model's rewrites ---------------------------------------------------------------------


async def _model_edits(
    settings: Settings, sites: list[tuple[Site, str]], say: Callable[[str], None]
) -> dict[str, object]:
    from codeagent_lsp.assistant import Assistant

    assistant = Assistant(settings)
    try:
        info = await assistant.load()
        verdicts: Counter[str] = Counter()
        for number, (site, text) in enumerate(sites, 1):
            system, user = call_request(site)
            answer = await assistant.instruct(f"bench:{site.path}", system, user, max_tokens=160)
            verdicts[check_call(site, answer.text, text)[0]] += 1
            say(f"model {number}/{len(sites)}")
    finally:
        assistant.close()
    total = sum(verdicts.values())
    parsed = total - verdicts["no call"] - verdicts["no parse"]
    return {
        "model": info.name,
        "device": info.device,
        "sites": total,
        "parse_rate": round(parsed / total, 3) if total else None,
        "arity_rate": round(verdicts["ok"] / total, 3) if total else None,
        "verdicts": dict(verdicts),
    }
