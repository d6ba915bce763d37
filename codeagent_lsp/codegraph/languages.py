"""The language table: grammar wheels, file extensions and this project's queries (queries/).

Adding a language is a grammar wheel in pyproject.toml, a row in LANGUAGES and a query folder;
see queries/README.md beside this module.
"""

from __future__ import annotations

import bisect
import importlib
import re
import threading
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePath
from typing import Literal

import tree_sitter

# Package data, so a wheel carries the queries (a path computed from __file__ would not be).
QUERIES = resources.files(__package__) / "queries"

QueryKind = Literal["definitions", "references", "imports"]
QUERY_KINDS: tuple[QueryKind, ...] = ("definitions", "references", "imports")


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    module: str
    """The grammar wheel's Python module."""
    function: str
    """The module's function returning the TSLanguage capsule."""
    extensions: tuple[str, ...]
    queries: str
    """Folder under queries/ holding definitions.scm, references.scm and imports.scm."""
    module_separator: str = "."
    """Joins several @import.module captures of one match (nested Rust use groups)."""


LANGUAGES: dict[str, LanguageSpec] = {
    spec.name: spec
    for spec in (
        LanguageSpec("python", "tree_sitter_python", "language", (".py", ".pyi"), "python"),
        LanguageSpec(
            "javascript",
            "tree_sitter_javascript",
            "language",
            (".js", ".mjs", ".cjs", ".jsx"),
            "javascript",
        ),
        LanguageSpec(
            "typescript",
            "tree_sitter_typescript",
            "language_typescript",
            (".ts", ".mts", ".cts"),
            "typescript",
        ),
        LanguageSpec("tsx", "tree_sitter_typescript", "language_tsx", (".tsx",), "tsx"),
        LanguageSpec("go", "tree_sitter_go", "language", (".go",), "go"),
        LanguageSpec("rust", "tree_sitter_rust", "language", (".rs",), "rust", "::"),
        LanguageSpec("java", "tree_sitter_java", "language", (".java",), "java"),
        # .h goes to C: C++ headers usually say so (.hpp, .hh), and C++'s grammar is a
        # superset that would read most C headers anyway.
        LanguageSpec("c", "tree_sitter_c", "language", (".c", ".h"), "c"),
        LanguageSpec(
            "cpp",
            "tree_sitter_cpp",
            "language",
            (".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx", ".h++", ".ipp", ".inl"),
            "cpp",
            "::",
        ),
    )
}

_BY_EXTENSION = {ext: spec.name for spec in LANGUAGES.values() for ext in spec.extensions}

# `; inherits: a, b` on a query file's first lines appends those folders' same-named files.
_INHERITS = re.compile(r"^;\s*inherits:\s*(.+)$", re.MULTILINE)


def supported_languages() -> tuple[str, ...]:
    return tuple(LANGUAGES)


def language_for(path: str | PurePath) -> str | None:
    """The language of a file, from its extension; None when not supported."""
    return _BY_EXTENSION.get(PurePath(path).suffix.lower())


def spec(name: str) -> LanguageSpec:
    try:
        return LANGUAGES[name]
    except KeyError:
        raise ValueError(f"unsupported language: {name!r}") from None


@cache
def language(name: str) -> tree_sitter.Language:
    entry = spec(name)
    capsule = getattr(importlib.import_module(entry.module), entry.function)()
    return tree_sitter.Language(capsule)


_parsers = threading.local()


def parser_for(name: str) -> tree_sitter.Parser:
    """A parser for the language, one per thread: a Parser must not parse in two threads."""
    cached: dict[str, tree_sitter.Parser] | None = getattr(_parsers, "by_language", None)
    if cached is None:
        cached = _parsers.by_language = {}
    parser = cached.get(name)
    if parser is None:
        parser = cached[name] = tree_sitter.Parser(language(name))
    return parser


def query_source(folder: str, kind: QueryKind) -> str:
    """A query file's text with the files it inherits appended: its own patterns come first,
    and for definitions and references the first pattern to match a node wins."""
    text = QUERIES.joinpath(folder, f"{kind}.scm").read_text(encoding="utf-8")
    parts = [text]
    for line in _INHERITS.findall(text):
        for parent in (name.strip() for name in line.split(",")):
            if parent:
                parts.append(query_source(parent, kind))
    return "\n".join(parts)


@cache
def query(name: str, kind: QueryKind) -> tree_sitter.Query:
    """The compiled query, kept: compiling takes tens of ms (hundreds for C++)."""
    return tree_sitter.Query(language(name), query_source(spec(name).queries, kind))


@cache
def extraction_query(name: str) -> tuple[tree_sitter.Query, tuple[QueryKind, ...]]:
    """The three queries compiled as one, so a file is walked once (each walk of a large tree
    costs as much as the matching), and the kind of query each pattern index came from."""
    folder = spec(name).queries
    sources = [query_source(folder, kind) for kind in QUERY_KINDS]
    ends: list[int] = []  # byte offset where each kind's text ends in the combined source
    for text in sources:
        ends.append((ends[-1] + 1 if ends else 0) + len(text.encode()))
    compiled = tree_sitter.Query(language(name), "\n".join(sources))
    kinds = tuple(
        QUERY_KINDS[bisect.bisect_right(ends, compiled.start_byte_for_pattern(index))]
        for index in range(compiled.pattern_count)
    )
    return compiled, kinds
