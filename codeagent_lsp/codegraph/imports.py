"""Import resolution: which workspace file an import names, per language (Python packages and
relative imports, JS/TS paths and index files, Go modules, Rust crates and modules, Java
packages, C/C++ includes), over an index of the workspace's paths (`PathIndex`)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PYTHON = {"python"}
JS_FAMILY = {"javascript", "typescript", "tsx", "jsx"}
C_FAMILY = {"c", "cpp"}
_JS_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")


@dataclass
class PathIndex:
    """The workspace's files as import resolution needs them; rebuilt when files come or go."""

    by_key: dict[tuple[str, str], int] = field(default_factory=dict)
    by_basename: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)
    dirs: set[tuple[str, str]] = field(default_factory=set)
    files_in_dir: dict[tuple[str, str], list[tuple[str, int, str]]] = field(default_factory=dict)
    packages: set[int] = field(default_factory=set)
    """Python __init__ files."""
    suffix_cache: dict[tuple[str, str], int | None] = field(default_factory=dict)

    @classmethod
    def build(cls, files: Iterable[tuple[int, str, str, str]]) -> PathIndex:
        index = cls()
        for file_id, repo, path, language in files:
            index.by_key[(repo, path)] = file_id
            name = posixpath.basename(path)
            index.by_basename.setdefault(name, []).append((repo, path, file_id))
            if name in ("__init__.py", "__init__.pyi"):
                index.packages.add(file_id)
            directory = posixpath.dirname(path)
            index.files_in_dir.setdefault((repo, directory), []).append((path, file_id, language))
            while directory:
                index.dirs.add((repo, directory))
                directory = posixpath.dirname(directory)
        return index

    def resolve(
        self,
        go_modules: Mapping[str, tuple[str, str]],
        repo: str,
        path: str,
        language: str,
        module: str,
        first_name: str | None,
    ) -> int | None:
        names = [first_name] if first_name else []
        return _resolve(self, go_modules, repo, path, language, module, names)


# --- import resolution --------------------------------------------------------------------------


def _resolve(
    paths: PathIndex,
    go_modules: Mapping[str, tuple[str, str]],
    repo: str,
    path: str,
    language: str,
    module: str,
    names: list[str],
) -> int | None:
    """The id of the workspace file an import names, or None (external, or not understood)."""
    module = module.strip().strip("\"'<>")
    if not module:
        return None
    here = posixpath.dirname(path)
    if language in PYTHON:
        return _resolve_python(paths, repo, here, module, names)
    if language in JS_FAMILY:
        return _resolve_js(paths, repo, here, module)
    if language == "go":
        return _resolve_go(paths, go_modules, repo, module)
    if language == "rust":
        return _resolve_rust(paths, repo, path, module, names)
    if language == "java":
        return _resolve_java(paths, repo, module, names)
    if language in C_FAMILY:
        return _resolve_include(paths, repo, here, module)
    return None


def _first(paths: PathIndex, repo: str, candidates: Iterable[str]) -> int | None:
    for candidate in candidates:
        normal = posixpath.normpath(candidate).lstrip("/")
        if normal.startswith("../"):
            continue  # above the repo root
        file_id = paths.by_key.get((repo, normal))
        if file_id is not None:
            return file_id
    return None


def _by_suffix(paths: PathIndex, repo: str, suffixes: Iterable[str]) -> int | None:
    """A file whose path ends with one of `suffixes` (in order), this repo first, then the
    shortest path: an import names a file below some source root we do not know."""
    for suffix in suffixes:
        key = (repo, suffix)
        if key not in paths.suffix_cache:
            matches = [
                (other != repo, len(p), p, fid)
                for other, p, fid in paths.by_basename.get(posixpath.basename(suffix), [])
                if p == suffix or p.endswith("/" + suffix)
            ]
            paths.suffix_cache[key] = min(matches)[3] if matches else None
        found = paths.suffix_cache[key]
        if found is not None:
            return found
    return None


def _join(directory: str, relative: str) -> str:
    return posixpath.normpath(posixpath.join(directory, relative)) if directory else relative


def _resolve_python(
    paths: PathIndex, repo: str, here: str, module: str, names: list[str]
) -> int | None:
    dots = len(module) - len(module.lstrip("."))
    parts = [p for p in module[dots:].split(".") if p]

    def candidates(base: list[str]) -> list[str]:
        stem = "/".join(base)
        return [f"{stem}.py", f"{stem}.pyi", f"{stem}/__init__.py", f"{stem}/__init__.pyi"]

    if dots:
        directory = here
        for _ in range(dots - 1):
            directory = posixpath.dirname(directory)
        prefix = directory.split("/") if directory else []
        found = _first(paths, repo, candidates(prefix + parts)) if parts else None
        package = found if found is not None else _first(paths, repo, candidates(prefix))
        # `from . import util` means the submodule util.py, not the package.
        submodule = _first(paths, repo, candidates([*prefix, *parts, names[0]])) if names else None
        if found is None or _is_package(paths, found):
            return submodule if submodule is not None else (found or package)
        return found
    found = _by_suffix(paths, repo, candidates(parts))
    if found is None and len(parts) > 1 and parts[0] == repo:
        # The workspace folder is the package itself (`email/`): its files' paths lack it.
        parts = parts[1:]
        found = _by_suffix(paths, repo, candidates(parts))
    if names and (found is None or _is_package(paths, found)):
        submodule = _by_suffix(paths, repo, candidates([*parts, names[0]]))
        if submodule is not None:
            return submodule
    return found


def _is_package(paths: PathIndex, file_id: int) -> bool:
    return file_id in paths.packages


def _resolve_js(paths: PathIndex, repo: str, here: str, module: str) -> int | None:
    if not module.startswith((".", "/")):
        return None  # a package: node_modules is not indexed
    base = _join(here, module) if module.startswith(".") else module.lstrip("/")
    stems = [base]
    stem, extension = posixpath.splitext(base)
    if extension in {".js", ".jsx", ".mjs", ".cjs"}:
        stems.append(stem)  # TypeScript's ESM convention: "./util.js" names util.ts
    candidates = [base]
    for current in stems:
        candidates += [current + ext for ext in _JS_EXTENSIONS]
        candidates += [f"{current}/index{ext}" for ext in _JS_EXTENSIONS]
    return _first(paths, repo, candidates)


def _resolve_go(
    paths: PathIndex, go_modules: Mapping[str, tuple[str, str]], repo: str, module: str
) -> int | None:
    for name, (module_repo, directory) in sorted(go_modules.items(), key=lambda m: -len(m[0])):
        if module == name or module.startswith(name + "/"):
            return _go_package(paths, module_repo, _join(directory, module[len(name) + 1 :]))
    # No go.mod says where it lives: the longest tail of the path (two segments at least, so
    # "fmt" or ".../log" never lands on a local folder by chance) that is a workspace folder.
    segments = module.split("/")
    for start in range(len(segments) - 1):
        directory = "/".join(segments[start:])
        for other in sorted({r for r, d in paths.dirs if d == directory}, key=lambda r: r != repo):
            found = _go_package(paths, other, directory)
            if found is not None:
                return found
    return None


def _go_package(paths: PathIndex, repo: str, directory: str) -> int | None:
    files = sorted(
        (p.endswith("_test.go"), p, fid)
        for p, fid, language in paths.files_in_dir.get((repo, directory.strip("/")), [])
        if language == "go"
    )
    return files[0][2] if files else None


def _resolve_rust(
    paths: PathIndex, repo: str, path: str, module: str, names: list[str]
) -> int | None:
    # `use a::b::{C, d}` arrives as module "a::b" with names; the first name may be a module.
    segments = [s for s in module.split("{")[0].split("::") if s and s != "*"]
    segments += [n for n in names[:1] if n not in {"*", "self"}]
    if not segments:
        return None
    if segments[0] == "crate":
        directory, rest = _crate_root(paths, repo, path), segments[1:]
    else:
        # self::, super::, or (Rust 2018) a submodule of the current module; another crate's
        # path simply finds no file.
        directory, rest = _module_dir(path), segments[segments[0] == "self" :]
        while rest and rest[0] == "super":
            directory, rest = posixpath.dirname(directory), rest[1:]
    # The longest prefix of the path that is a module file; the rest names items in it.
    for end in range(len(rest), 0, -1):
        stem = "/".join([directory, *rest[:end]] if directory else rest[:end])
        found = _first(paths, repo, [f"{stem}.rs", f"{stem}/mod.rs"])
        if found is not None:
            return found
    return None


def _module_dir(path: str) -> str:
    """Where a Rust file's submodules live: next to mod.rs/lib.rs/main.rs, else in foo/."""
    directory, name = posixpath.split(path)
    if name in {"mod.rs", "lib.rs", "main.rs"}:
        return directory
    return posixpath.join(directory, name[: -len(".rs")]) if directory else name[: -len(".rs")]


def _crate_root(paths: PathIndex, repo: str, path: str) -> str:
    directory = posixpath.dirname(path)
    while True:
        if any((repo, _join(directory, root)) in paths.by_key for root in ("lib.rs", "main.rs")):
            return directory
        if not directory:
            return posixpath.dirname(path)
        directory = posixpath.dirname(directory)


def _resolve_java(paths: PathIndex, repo: str, module: str, names: list[str]) -> int | None:
    # `import a.b.C;` arrives as module "a.b" with names ("C",), `import a.b.*;` with ("*",).
    parts = [p for p in module.removeprefix("static ").split(".") if p and p != "*"]
    if module.endswith(".*") or names[:1] == ["*"]:
        return _java_package(paths, repo, "/".join(parts)) if parts else None
    parts += names[:1]
    # The longest prefix naming a class file; the rest are members (static imports). Two
    # segments at least: no import names a class in the default package.
    for end in range(len(parts), 1, -1):
        found = _by_suffix(paths, repo, ["/".join(parts[:end]) + ".java"])
        if found is not None:
            return found
    return None


def _java_package(paths: PathIndex, repo: str, directory: str) -> int | None:
    """A whole package: its first class stands for it."""
    key = (repo, directory + "/*")
    if key not in paths.suffix_cache:
        found = sorted(
            (other != repo, folder, path, fid)
            for (other, folder), files in paths.files_in_dir.items()
            if folder == directory or folder.endswith("/" + directory)
            for path, fid, language in files
            if language == "java"
        )
        paths.suffix_cache[key] = found[0][3] if found else None
    return paths.suffix_cache[key]


def _resolve_include(paths: PathIndex, repo: str, here: str, module: str) -> int | None:
    found = _first(paths, repo, [_join(here, module)])
    return found if found is not None else _by_suffix(paths, repo, [posixpath.normpath(module)])
