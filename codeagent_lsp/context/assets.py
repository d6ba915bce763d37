"""The workspace's API schemas, configuration and docs, cut into sections a prompt can quote.

What is read: `*.yaml`, `*.yml`, `*.toml`, `*.json`, `*.md`, `*.markdown` (so `openapi.*`,
`swagger.*` and `*.schema.json` too) that .gitignore (nested ones and .git/info/exclude) does not
ignore, outside vendored, generated and virtual-environment folders, that the PathPolicy allows,
not binary, not above max_file_bytes. Symlinks are never followed: one pointing inside its root
names a file indexed under its own name anyway, and one pointing out of it must not be read.

How files are cut: Markdown by heading; OpenAPI (JSON, or YAML with `openapi:`/`swagger:` at the
top level) by operation, rendered as method, path, summary, parameters and the schema names of
its request body and responses, plus a section per component schema; JSON Schema by property;
other YAML, TOML and JSON by top-level key (a TOML table per section, written back compactly).
PyYAML is not a dependency, so YAML is read by indentation only, as far as this needs: top-level
blocks, and block mappings and lists for an OpenAPI document (flow collections, anchors and
multi-line scalars stay text).

Secrets: the PathPolicy keeps key and environment files out; as a second line, section text has
private-key blocks, well-known token shapes, URL passwords and values of secret-named keys
replaced by `<redacted>` before anything is indexed or returned.

Ranking is Okapi BM25 over the sections' words, written out here (about twenty lines) because
a search library would be a dependency for a few thousand short documents, and the weights
(title boost, compound identifiers, API paths) are ours to tune.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import threading
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Any

from codeagent_lsp.codegraph.indexer import SKIP_DIRS
from codeagent_lsp.codegraph.walk import GitIgnores, walk
from codeagent_lsp.security.paths import PathPolicy
from codeagent_lsp.security.redact import redact
from codeagent_lsp.security.roots import Root, locate

log = logging.getLogger(__name__)

ASSET_SUFFIXES = frozenset({".yaml", ".yml", ".toml", ".json", ".md", ".markdown"})
SKIP_NAMES = frozenset({"package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml"})
"""Lock files: machine-written, large, and about other people's packages."""
MAX_SECTION_LINES = 40
MAX_SECTION_CHARS = 2000
MAX_TITLE_CHARS = 120
MAX_SECTIONS_PER_FILE = 500
BINARY_PROBE_BYTES = 8192

K1 = 1.2
B = 0.75
"""BM25's usual constants: term-frequency saturation and length normalisation."""
TITLE_BOOST = 2
"""A word in a section's title (heading, key, operation) counts this many times more."""
COMPOUND_WEIGHT = 2.0
PATH_WEIGHT = 2.0
"""Query weights of a whole identifier (`get_user`) and an API path (`/users/{}`) against 1 for a
single word: they say far more about what the cursor is doing."""
MIN_SCORE = 1.0
"""About one match of a word that a third of the sections hold: less is chance."""
RELATIVE_CUTOFF = 0.2
"""Sections scoring under this share of the best are the tail of common words: left out."""


@dataclass(frozen=True)
class Section:
    repo: str
    path: str
    """Relative to the repo's root, posix."""
    title: str
    text: str
    """What a prompt may quote: at most MAX_SECTION_LINES lines and MAX_SECTION_CHARS chars."""
    kind: str
    """"markdown", "openapi" (an operation or the API's info), "schema" (a JSON Schema property
    or an OpenAPI component schema), "yaml", "toml" or "json"."""


@dataclass(eq=False)
class _Doc:
    """A section with what ranking needs; hashed by identity."""

    section: Section
    terms: Counter[str]
    length: int
    squashed: str
    """The text with whitespace runs collapsed: how exclude_text containment is checked."""


@dataclass
class _Corpus:
    files: dict[tuple[str, str], list[_Doc]] = field(default_factory=dict)
    postings: dict[str, set[_Doc]] = field(default_factory=lambda: defaultdict(set))
    total_length: int = 0
    count: int = 0

    def add(self, key: tuple[str, str], docs: list[_Doc]) -> None:
        self.remove(key)
        self.files[key] = docs
        for doc in docs:
            for term in doc.terms:
                self.postings[term].add(doc)
            self.total_length += doc.length
            self.count += 1

    def remove(self, key: tuple[str, str]) -> bool:
        docs = self.files.pop(key, None)
        if docs is None:
            return False
        for doc in docs:
            for term in doc.terms:
                holders = self.postings[term]
                holders.discard(doc)
                if not holders:
                    del self.postings[term]
            self.total_length -= doc.length
            self.count -= 1
        return True


class AssetIndex:
    def __init__(
        self,
        roots: list[tuple[str, Path]],
        policy: PathPolicy,
        max_file_bytes: int = 256_000,
        max_files: int = 2000,
    ) -> None:
        self.roots = [Root.of(repo, path) for repo, path in roots]
        self.policy = policy
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self._ignores = GitIgnores()
        self._corpus = _Corpus()
        self._lock = threading.RLock()
        """Guards _corpus: refreshes run in a worker while completions query."""

    # --- keeping it current ---------------------------------------------------------------------

    def refresh(self) -> int:
        """Rescan every root; the number of files indexed. Built aside, then swapped in, so
        queries meanwhile see the previous index whole."""
        self._ignores.clear()
        corpus = _Corpus()
        for root in self.roots:
            for rel in self._walk(root, ""):
                if len(corpus.files) >= self.max_files:
                    log.info("assets: stopped at max_files=%d", self.max_files)
                    break
                docs = self._load(root, rel)
                if docs is not None:
                    corpus.add((root.repo, rel), docs)
        with self._lock:
            self._corpus = corpus
        return len(corpus.files)

    def refresh_path(self, path: Path | str) -> bool:
        """A watched file or folder was created or changed (absolute path); True when the index
        changed. Paths outside the roots are ignored."""
        located = self._locate(path)
        if located is None:
            return False
        root, rel = located
        absolute = root.path / rel
        if PurePosixPath(rel).name == ".gitignore" or rel == ".git/info/exclude":
            self.refresh()  # what the rules hide or show may be anywhere below
            return True
        if not os.path.lexists(absolute):
            return self.remove_path(path)
        if os.path.realpath(absolute.parent) != str(absolute.parent):
            return False  # reached through a symlinked folder, which a walk does not enter
        if absolute.is_dir() and not absolute.is_symlink():
            return self._refresh_dir(root, rel)
        if self._path_excluded(root, rel):
            return self._remove((root.repo, rel))
        docs = self._load(root, rel)
        if docs is None:
            return self._remove((root.repo, rel))
        with self._lock:
            corpus = self._corpus
            if (root.repo, rel) not in corpus.files and len(corpus.files) >= self.max_files:
                return False
            corpus.add((root.repo, rel), docs)
        return True

    def remove_path(self, path: Path | str) -> bool:
        """A watched file or folder was deleted (absolute path)."""
        located = self._locate(path)
        if located is None:
            return False
        root, rel = located
        with self._lock:
            keys = [
                key for key in self._corpus.files
                if key[0] == root.repo and (key[1] == rel or key[1].startswith(rel + "/"))
            ]  # fmt: skip
            for key in keys:
                self._corpus.remove(key)
        return bool(keys)

    def _refresh_dir(self, root: Root, rel: str) -> bool:
        if self._dir_path_excluded(root, rel):
            return self.remove_path(root.path / rel)
        loaded = {(root.repo, r): self._load(root, r) for r in self._walk(root, rel)}
        with self._lock:
            corpus = self._corpus
            stale = [
                key for key in corpus.files
                if key[0] == root.repo and key[1].startswith(rel + "/") and key not in loaded
            ]  # fmt: skip
            for key in stale:
                corpus.remove(key)
            for key, docs in loaded.items():
                if docs is None:
                    corpus.remove(key)
                elif key in corpus.files or len(corpus.files) < self.max_files:
                    corpus.add(key, docs)
        return bool(stale or loaded)

    def _remove(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return self._corpus.remove(key)

    # --- queries --------------------------------------------------------------------------------

    def sections(self) -> list[Section]:
        """Every indexed section, file by file."""
        with self._lock:
            return [doc.section for docs in self._corpus.files.values() for doc in docs]

    def relevant(
        self, words: Iterable[str], limit: int, exclude_text: str = ""
    ) -> list[tuple[Section, float]]:
        """Sections whose words meet the cursor's (identifiers and string literals near it),
        best first with their BM25 scores, at most `limit`; none whose text `exclude_text`
        (the prompt's prefix and suffix) already holds, whitespace aside."""
        query = query_terms(words)
        if not query or limit <= 0:
            return []
        with self._lock:
            scores = _bm25(self._corpus, query)
        if not scores:
            return []
        floor = max(MIN_SCORE, RELATIVE_CUTOFF * max(scores.values()))
        ranked = sorted(
            ((doc, score) for doc, score in scores.items() if score >= floor),
            key=lambda item: (-item[1], item[0].section.path, item[0].section.title),
        )
        excluded = _squash(exclude_text)
        found: list[tuple[Section, float]] = []
        for doc, score in ranked:
            if exclude_text and doc.squashed in excluded:
                continue
            found.append((doc.section, round(score, 4)))
            if len(found) == limit:
                break
        return found

    # --- paths ----------------------------------------------------------------------------------

    def _locate(self, path: Path | str) -> tuple[Root, str] | None:
        return locate(self.roots, path)

    # --- scanning -------------------------------------------------------------------------------

    def _walk(self, root: Root, start: str) -> Iterator[str]:
        """Asset files under `start` (relative, posix; "" for the root), sorted, folders that
        hold other roots left to those; links are never followed (see the module's docstring)."""
        excluded = functools.partial(self._dir_excluded, root)
        for rel in walk(root, start, roots=self.roots, dir_excluded=excluded, file_links=False):
            if not self._file_excluded(root, rel):
                yield rel

    def _dir_excluded(self, root: Root, rel: str) -> bool:
        name = PurePosixPath(rel).name
        return (
            name in SKIP_DIRS
            or (root.path / rel / "pyvenv.cfg").exists()  # a virtual environment, any name
            or not self.policy.allowed_dir(rel)
            or self._ignored(root, rel, is_dir=True)
        )

    def _file_excluded(self, root: Root, rel: str) -> bool:
        name = PurePosixPath(rel).name
        return (
            PurePosixPath(name.lower()).suffix not in ASSET_SUFFIXES
            or name.lower() in SKIP_NAMES
            or not self.policy.allowed(rel)
            or self._ignored(root, rel, is_dir=False)
        )

    def _dir_path_excluded(self, root: Root, rel: str) -> bool:
        """For a folder out of a walk: the folders above it count too."""
        parts = rel.split("/")
        prefixes = ("/".join(parts[:end]) for end in range(1, len(parts) + 1))
        return any(self._dir_excluded(root, prefix) for prefix in prefixes)

    def _path_excluded(self, root: Root, rel: str) -> bool:
        """For one file out of a walk: the folders above it count, and links are not read."""
        parent = rel.rpartition("/")[0]
        return (
            (bool(parent) and self._dir_path_excluded(root, parent))
            or (root.path / rel).is_symlink()
            or self._file_excluded(root, rel)
        )

    def _ignored(self, root: Root, rel: str, *, is_dir: bool) -> bool:
        return self._ignores.ignored(root.path, rel, is_dir=is_dir)

    # --- reading --------------------------------------------------------------------------------

    def _load(self, root: Root, rel: str) -> list[_Doc] | None:
        """The file's sections, or None when it cannot or may not be read."""
        text = self._read(root.path / rel)
        if text is None:
            return None
        try:
            parts = split_sections(rel, text)
        except (ValueError, RecursionError) as exc:  # malformed beyond what the parsers take
            log.debug("assets: cannot split %s: %s", rel, exc)
            return None
        return [_doc(root.repo, rel, title, body, kind) for title, body, kind in parts]

    def _read(self, path: Path) -> str | None:
        # O_NOFOLLOW: a file swapped for a symlink after the scan is not followed out of the root.
        try:
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(descriptor, "rb") as handle:
                data = handle.read(self.max_file_bytes + 1)
        except OSError as exc:
            log.debug("assets: cannot read %s: %s", path, exc)
            return None
        if len(data) > self.max_file_bytes or b"\0" in data[:BINARY_PROBE_BYTES]:
            return None
        return data.decode("utf-8", errors="replace")


def _doc(repo: str, rel: str, title: str, body: str, kind: str) -> _Doc:
    # Redacted before capping, so a cut cannot leave half a secret the patterns miss.
    title = redact(title)[:MAX_TITLE_CHARS]
    text = _cap(redact(body))
    terms = _terms(text)
    for term, count in _terms(title).items():
        terms[term] += TITLE_BOOST * count
    section = Section(repo, rel, title, text, kind)
    return _Doc(section, terms, sum(terms.values()), _squash(text))


def _cap(text: str) -> str:
    text = "\n".join(text.strip("\n").split("\n")[:MAX_SECTION_LINES])
    if len(text) > MAX_SECTION_CHARS:
        cut = text.rfind("\n", 0, MAX_SECTION_CHARS + 1)
        text = text[: cut if cut > 0 else MAX_SECTION_CHARS]
    return text


def _squash(text: str) -> str:
    return " ".join(text.split())


# --- ranking ------------------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*|\d+")
_SUBWORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_API_PATH = re.compile(r"(?<![\w:/.])/[\w.{}$:<>-]+(?:/[\w.{}$:<>-]*)*")
_STOP = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "by", "can", "for", "from", "if", "in", "is",
        "it", "of", "on", "or", "that", "the", "this", "to", "we", "will", "with", "you",
        "async", "await", "bool", "catch", "class", "cls", "const", "def", "dict", "elif",
        "else", "except", "false", "finally", "float", "fn", "func", "function", "impl", "import",
        "int", "let", "len", "list", "mut", "new", "nil", "none", "not", "null", "pass", "print",
        "pub", "raise", "return", "self", "str", "string", "throw", "true", "try", "type", "var",
        "void",
    }
)  # fmt: skip
"""Words that every snippet of code or schema holds: they would only add noise."""


def query_terms(words: Iterable[str]) -> dict[str, float]:
    """The cursor's words as weighted terms: each word's lowercase parts (snake_case,
    camelCase, kebab-case split, plurals folded) weigh 1, a whole multi-part identifier
    (`get_user` for getUser or GET_USER) COMPOUND_WEIGHT, an API path (`/users/{}` for
    "/users/{id}" or "/users/:id") PATH_WEIGHT."""
    query: dict[str, float] = {}
    for word in words:
        for term in _terms(word):
            weight = 1.0
            if term.startswith("/"):
                weight = PATH_WEIGHT
            elif "_" in term:
                weight = COMPOUND_WEIGHT
            query[term] = max(query.get(term, 0.0), weight)
    return query


def _terms(text: str) -> Counter[str]:
    """The terms of a text, counted: single words, multi-part identifiers, API paths."""
    terms: Counter[str] = Counter()
    for match in _API_PATH.finditer(text):
        path = _path_term(match.group())
        if path:
            terms[path] += 1
    for ident in _IDENT.findall(text):
        parts = [_stem(p.lower()) for p in _SUBWORD.findall(ident)]
        terms.update(p for p in parts if len(p) > 1 and p not in _STOP)
        if len(parts) > 1:
            terms["_".join(parts)] += 1
    return terms


def _path_term(path: str) -> str:
    """An API path with its parameters made alike: "/users/{id}", "/users/:id/",
    "/users/${userId}" all give "/users/{}"."""
    segments = [
        "{}" if segment.startswith(("{", ":", "$", "<")) else segment
        for segment in path.lower().rstrip("/").split("/")
    ]
    joined = "/".join(segments)
    return joined if re.search(r"[a-z]", joined) else ""


def _stem(word: str) -> str:
    """Plurals folded, just enough for "users" to meet "user"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _bm25(corpus: _Corpus, query: dict[str, float]) -> dict[_Doc, float]:
    """score(d) = sum over query terms t of
    w(t) * ln(1 + (N - df + 0.5) / (df + 0.5)) * tf * (K1 + 1) / (tf + K1 * (1 - B + B * |d| / avg))
    """
    if corpus.count == 0:
        return {}
    average = corpus.total_length / corpus.count or 1.0
    scores: dict[_Doc, float] = defaultdict(float)
    for term, weight in query.items():
        holders = corpus.postings.get(term)
        if not holders:
            continue
        df = len(holders)
        idf = math.log(1 + (corpus.count - df + 0.5) / (df + 0.5))
        for doc in holders:
            tf = doc.terms[term]
            norm = K1 * (1 - B + B * doc.length / average)
            scores[doc] += weight * idf * tf * (K1 + 1) / (tf + norm)
    return scores


# --- splitting ----------------------------------------------------------------------------------


def split_sections(rel: str, text: str) -> list[tuple[str, str, str]]:
    """(title, text, kind) for each section of a file, by its name and content; uncapped and
    unredacted (the index does both)."""
    name = PurePosixPath(rel).name
    suffix = PurePosixPath(name.lower()).suffix
    if suffix in (".md", ".markdown"):
        parts = _markdown_sections(name, text)
    elif suffix == ".toml":
        parts = _toml_sections(name, tomllib.loads(text))
    elif suffix == ".json":
        parts = _json_document_sections(name, json.loads(text))
    else:
        parts = _yaml_document_sections(name, text)
    return [p for p in parts if p[1].strip()][:MAX_SECTIONS_PER_FILE]


# Markdown ---------------------------------------------------------------------------------------

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _markdown_sections(name: str, text: str) -> list[tuple[str, str, str]]:
    """A section per ATX heading (`## Title`), titled by its heading trail ("Usage > Install");
    headings inside code fences are code. The text before the first heading is titled by the
    file's name. A heading with nothing under it before the next is left out: its words are in
    the titles of the sections below it."""
    sections: list[tuple[str, str, str]] = []
    trail: list[tuple[int, str]] = []
    body: list[str] = []
    title = name
    fence: str | None = None
    for line in text.splitlines():
        opener = _FENCE.match(line)
        if opener and (fence is None or opener.group(1).startswith(fence)):
            fence = opener.group(1)[:3] if fence is None else None
        heading = None if fence else _HEADING.match(line)
        if heading:
            _add_markdown(sections, title, body)
            level = len(heading.group(1))
            trail = [(lvl, t) for lvl, t in trail if lvl < level] + [(level, heading.group(2))]
            title = " > ".join(t for _, t in trail)
            body = []
        body.append(line)
    _add_markdown(sections, title, body)
    return sections


def _add_markdown(sections: list[tuple[str, str, str]], title: str, body: list[str]) -> None:
    if any(line.strip() and not _HEADING.match(line) for line in body):
        sections.append((title, "\n".join(body), "markdown"))


# TOML -------------------------------------------------------------------------------------------


def _toml_sections(name: str, data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A section per table holding values (`[database]`, `[tool.ruff.lint]`), its sub-tables
    sections of their own; top-level values one section titled by the file's name."""
    sections: list[tuple[str, str, str]] = []

    def visit(path: list[str], table: dict[str, Any]) -> None:
        values = [
            f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()
            if not isinstance(v, dict) and not _table_array(v)
        ]  # fmt: skip
        if values:
            header = [f"[{'.'.join(map(_toml_key, path))}]"] if path else []
            sections.append((".".join(path) or name, "\n".join(header + values), "toml"))
        for key, value in table.items():
            if isinstance(value, dict):
                visit([*path, key], value)
            elif _table_array(value):
                dotted = ".".join(map(_toml_key, [*path, key]))
                blocks = [
                    "\n".join(
                        [f"[[{dotted}]]"]
                        + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]
                    )
                    for item in value
                ]
                sections.append((".".join([*path, key]), "\n\n".join(blocks), "toml"))

    visit([], data)
    return sections


def _table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + pairs + " }"
    return repr(value)


# JSON -------------------------------------------------------------------------------------------


def _json_document_sections(name: str, data: object) -> list[tuple[str, str, str]]:
    if isinstance(data, dict) and ("openapi" in data or "swagger" in data):
        return _openapi_sections(name, data)
    if isinstance(data, dict) and _is_json_schema(name, data):
        return _json_schema_sections(name, data)
    if not isinstance(data, dict):
        return [(name, _compact(name, data), "json")]
    return _grouped([(str(key), _compact(str(key), value)) for key, value in data.items()], "json")


def _is_json_schema(name: str, data: dict[str, Any]) -> bool:
    return (
        "$schema" in data
        or name.lower().endswith(".schema.json")
        or (data.get("type") == "object" and isinstance(data.get("properties"), dict))
    )


def _compact(key: str, value: object) -> str:
    """`key: <JSON>` on one line when short, else one line per member."""
    one_line = f"{key}: {json.dumps(value, ensure_ascii=False)}"
    if len(one_line) <= 120 or not isinstance(value, (dict, list)):
        return one_line
    lines = [f"{key}:"]
    if isinstance(value, dict):
        lines += [f"  {k}: {json.dumps(v, ensure_ascii=False)}"[:200] for k, v in value.items()]
    else:
        lines += [f"  - {json.dumps(v, ensure_ascii=False)}"[:200] for v in value]
    return "\n".join(lines)


def _grouped(blocks: list[tuple[str, str]], kind: str) -> list[tuple[str, str, str]]:
    """A section per block, consecutive one-line blocks (`name: x`, `version: 2`) merged into
    one: alone, each would be too small to tell anything."""
    sections: list[tuple[str, str, str]] = []
    run: list[tuple[str, str]] = []

    def flush() -> None:
        if run:
            title = ", ".join(k for k, _ in run)
            sections.append((title, "\n".join(t for _, t in run), kind))
            run.clear()

    for key, text in blocks:
        if "\n" in text.strip("\n"):
            flush()
            sections.append((key, text, kind))
        else:
            run.append((key, text))
    flush()
    return sections


# JSON Schema ------------------------------------------------------------------------------------


def _json_schema_sections(name: str, schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    """An overview, then a section per property (with its title, description, type, enum,
    nested properties), then one per `$defs`/`definitions` schema."""
    title = str(schema.get("title") or name.split(".")[0])
    sections = [(title, _schema_text(title, schema), "schema")]
    required = set(schema.get("required") or [])
    for prop, spec in _properties(schema).items():
        sections.append((f"{title}.{prop}", _property_text(title, prop, spec, required), "schema"))
    for defs in ("$defs", "definitions"):
        for def_name, definition in (schema.get(defs) or {}).items():
            if isinstance(definition, dict):
                sections.append((def_name, _schema_text(def_name, definition), "schema"))
    return sections


def _properties(schema: object) -> dict[str, Any]:
    props = schema.get("properties") if isinstance(schema, dict) else None
    return props if isinstance(props, dict) else {}


def _property_text(owner: str, prop: str, spec: object, required: set[str]) -> str:
    spec = spec if isinstance(spec, dict) else {}
    head = f"{owner}.{prop}: {_schema_name(spec)}" + (", required" if prop in required else "")
    lines = [head]
    for key in ("title", "description"):
        if spec.get(key):
            lines.append(str(spec[key]))
    if isinstance(spec.get("enum"), list):
        lines.append("enum: " + ", ".join(json.dumps(v, ensure_ascii=False) for v in spec["enum"]))
    if "default" in spec:
        lines.append(f"default: {json.dumps(spec['default'], ensure_ascii=False)}")
    nested = _properties(spec) or _properties(spec.get("items"))
    if nested:
        members = (f"{k}: {_schema_name(v)}" for k, v in nested.items())
        lines.append("properties: " + ", ".join(members))
    return "\n".join(lines)


def _schema_text(name: str, schema: dict[str, Any]) -> str:
    """A schema in a few lines: name and description, then `field: type` per property."""
    description = _first_line(schema.get("description"))
    lines = [f"{name}: {description}" if description else f"{name}: {_schema_name(schema)}"]
    required = schema.get("required")
    if isinstance(required, list) and required:
        lines.append("required: " + ", ".join(map(str, required)))
    for prop, spec in _properties(schema).items():
        note = _first_line(spec.get("description")) if isinstance(spec, dict) else ""
        lines.append(f"  {prop}: {_schema_name(spec)}" + (f" - {note}" if note else ""))
    if isinstance(schema.get("enum"), list):
        lines.append("enum: " + ", ".join(map(str, schema["enum"])))
    return "\n".join(lines)


def _schema_name(schema: object) -> str:
    """What a schema is, in a word: its $ref's name, `Item[]`, `a|b`, `string (email)`."""
    if isinstance(schema, str):  # a YAML flow mapping left as text: `{ $ref: '#/...' }`
        ref = re.search(r"\$ref['\"]?\s*:\s*['\"]?([^'\"\s}]+)", schema)
        return ref.group(1).rsplit("/", 1)[-1] if ref else ""
    if not isinstance(schema, dict):
        return ""
    if isinstance(schema.get("$ref"), str):
        return schema["$ref"].rsplit("/", 1)[-1]
    for combinator in ("oneOf", "anyOf", "allOf"):
        if isinstance(schema.get(combinator), list):
            joiner = "&" if combinator == "allOf" else "|"
            return joiner.join(filter(None, map(_schema_name, schema[combinator])))
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = "|".join(map(str, kind))
    if kind == "array":
        return (_schema_name(schema.get("items")) or "any") + "[]"
    if not kind and "properties" in schema:
        kind = "object"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if kind and fmt else str(kind or "")


def _first_line(value: object) -> str:
    return str(value).strip().split("\n", 1)[0][:160] if value else ""


# OpenAPI ----------------------------------------------------------------------------------------

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _openapi_sections(name: str, spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The API's info, a section per operation, a section per component schema."""
    sections: list[tuple[str, str, str]] = []
    info = _dict(spec.get("info"))
    title = str(info.get("title") or name)
    lines = [f"{title} {info.get('version') or ''}".strip()]
    lines += str(info.get("description") or "").strip().splitlines()[:5]
    servers = spec.get("servers")
    if isinstance(servers, list):
        lines += [f"server: {s['url']}" for s in servers if isinstance(s, dict) and "url" in s]
    sections.append((title, "\n".join(lines), "openapi"))
    paths = _dict(spec.get("paths"))
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        shared = _list(item.get("parameters"))
        for method in _METHODS:
            op = item.get(method)
            if isinstance(op, dict):
                text = _operation_text(method, str(path), op, shared)
                sections.append((f"{method.upper()} {path}", text, "openapi"))
    components = _dict(spec.get("components"))
    schemas = components.get("schemas") or spec.get("definitions") or {}
    if isinstance(schemas, dict):
        for schema_name, schema in schemas.items():
            if isinstance(schema, dict):
                text = _schema_text(str(schema_name), schema)
                sections.append((str(schema_name), text, "schema"))
    return sections


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _operation_text(method: str, path: str, op: dict[str, Any], shared: list[Any]) -> str:
    head = f"{method.upper()} {path}"
    if op.get("operationId"):
        head += f"  operationId: {op['operationId']}"
    lines = [head]
    if op.get("summary"):
        lines.append(f"summary: {_first_line(op['summary'])}")
    if op.get("description"):
        lines.append(f"description: {_first_line(op['description'])}")
    params = [*shared, *_list(op.get("parameters"))]
    rendered = [p for p in map(_parameter_text, params) if p]
    if rendered:
        lines.append("parameters: " + ", ".join(rendered))
    body = _content_schema(op.get("requestBody"))
    if body:
        lines.append(f"requestBody: {body}")
    responses = _dict(op.get("responses"))
    answers = [f"{code} {_content_schema(r) or _first_line(_get(r, 'description'))}".strip()
               for code, r in responses.items()]  # fmt: skip
    if answers:
        lines.append("responses: " + ", ".join(answers))
    return "\n".join(lines)


def _parameter_text(param: object) -> str:
    """`id (path, required, string)`; a $ref by its name; Swagger 2's body by its schema."""
    if not isinstance(param, dict):
        return _schema_name(param)
    if "$ref" in param:
        return _schema_name(param)
    notes = [str(param.get("in") or "")]
    if param.get("required") in (True, "true"):
        notes.append("required")
    notes.append(_schema_name(param.get("schema")) or str(param.get("type") or ""))
    return f"{param.get('name', '?')} ({', '.join(n for n in notes if n)})"


def _content_schema(holder: object) -> str:
    """The schema name of a request body or response: OpenAPI 3's `content.<media>.schema`,
    Swagger 2's `schema`, or a $ref to a shared one."""
    if not isinstance(holder, dict):
        return _schema_name(holder)
    if "$ref" in holder:
        return _schema_name(holder)
    if "schema" in holder:
        return _schema_name(holder["schema"])
    content = holder.get("content")
    if isinstance(content, dict):
        names = {_schema_name(_get(media, "schema")) for media in content.values()}
        return "|".join(sorted(n for n in names if n))
    return ""


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, dict) else None


# YAML, by indentation ---------------------------------------------------------------------------

_OPENAPI_YAML = re.compile(r"^(?:openapi|swagger)[ \t]*:", re.M)
_YAML_KEY = re.compile(
    r"""^(?P<indent>[ ]*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s#'"\-?][^#]*?))"""
    r"""[ \t]*:(?:[ \t]+(?P<value>.*?))?[ \t]*$"""
)
_DOCUMENT_MARK = re.compile(r"^(?:---|\.\.\.)(?:\s|$)")


def _yaml_document_sections(name: str, text: str) -> list[tuple[str, str, str]]:
    if _OPENAPI_YAML.search(text):
        tree = _yaml_value("", text.splitlines())
        if isinstance(tree, dict) and isinstance(tree.get("paths"), dict):
            return _openapi_sections(name, tree)
    sections: list[tuple[str, str, str]] = []
    for document in _yaml_documents(text):
        children = _yaml_children(document)
        if not children:  # a top-level list or scalar: the document is one section
            sections.append((name, "\n".join(document), "yaml"))
            continue
        sections += _grouped(_yaml_blocks(children), "yaml")
    return sections


def _yaml_blocks(children: list[tuple[str, str, list[str], str]]) -> list[tuple[str, str]]:
    """(key, raw text) per top-level block. A comment line just above a key introduces it, so
    it moves from the end of the block before to the start of the key's own."""
    blocks: list[tuple[str, str]] = []
    lead: list[str] = []
    for key, _, lines, line in children:
        body = list(lines)
        trailing: list[str] = []
        while body and (not body[-1].strip() or body[-1].startswith("#")):
            trailing.insert(0, body.pop())
        blocks.append((key, "\n".join([*lead, line, *body]).strip("\n")))
        lead = [t for t in trailing if t.strip()]
    return blocks


def _yaml_documents(text: str) -> list[list[str]]:
    documents: list[list[str]] = [[]]
    for line in text.splitlines():
        if _DOCUMENT_MARK.match(line):
            documents.append([])
        else:
            documents[-1].append(line)
    return [d for d in documents if any(_yaml_content(line) for line in d)]


def _yaml_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#") and not _DOCUMENT_MARK.match(line)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _yaml_item(line: str) -> bool:
    stripped = line.lstrip(" ")
    return stripped == "-" or stripped.startswith("- ")


def _yaml_children(lines: list[str]) -> list[tuple[str, str, list[str], str]]:
    """Split a block mapping at its shallowest indentation: (key, value on the key's line,
    the lines below it, the key's line). Lines before the first key are dropped."""
    content = [line for line in lines if _yaml_content(line)]
    if not content or _yaml_item(content[0]):
        return []
    level = _indent(content[0])
    children: list[tuple[str, str, list[str], str]] = []
    for line in lines:
        match = _YAML_KEY.match(line) if _yaml_content(line) and _indent(line) == level else None
        if match:
            key = next(g for g in (match["dq"], match["sq"], match["bare"]) if g is not None)
            children.append((key, match["value"] or "", [], line))
        elif children:
            children[-1][2].append(line)
    return children


def _yaml_value(inline: str, lines: list[str]) -> Any:
    """A node from the value on its key's line and the lines below: a scalar (as text), a
    block mapping (dict) or a block list."""
    inline = inline.strip()
    if inline.startswith("&"):  # an anchor: what follows it is the value
        inline = inline.partition(" ")[2].strip()
    if inline.startswith("#"):  # `key:  # a comment`, the value below
        inline = ""
    if inline.startswith(("|", ">")):
        return "\n".join(line.strip() for line in lines if line.strip())
    if inline:
        return _yaml_scalar(inline)
    content = [line for line in lines if _yaml_content(line)]
    if not content:
        return None
    if _yaml_item(content[0]):
        return _yaml_list(lines, _indent(content[0]))
    return {key: _yaml_value(value, below) for key, value, below, _ in _yaml_children(lines)}


def _yaml_list(lines: list[str], level: int) -> list[Any]:
    items: list[list[str]] = []
    for line in lines:
        if _yaml_content(line) and _indent(line) == level and _yaml_item(line):
            # The dash becomes a space: `- name: id` is then a mapping at level + 2.
            items.append([line[:level] + " " + line[level + 1 :]])
        elif items:
            items[-1].append(line)
    values = []
    for first, *rest in items:
        if _YAML_KEY.match(first) or not first.strip():
            values.append(_yaml_value("", [first, *rest]))
        else:
            values.append(_yaml_value(first, rest))
    return values


def _yaml_scalar(text: str) -> Any:
    """A scalar as text; a flat flow mapping or list (`{type: integer}`, `[id, email]`) as a
    dict or list of text. Nested flow collections stay text."""
    if text[0] in "\"'":
        end = text.find(text[0], 1)
        return text[1:end] if end > 0 else text[1:]
    text = text.split(" #", 1)[0].strip()
    inner = text[1:-1]
    if len(text) < 2 or any(c in inner for c in "{}[]"):
        return text
    if text[0] == "[" and text[-1] == "]":
        return [_yaml_scalar(item.strip()) for item in inner.split(",") if item.strip()]
    if text[0] == "{" and text[-1] == "}":
        pairs = (item.partition(":") for item in inner.split(",") if item.strip())
        return {k.strip().strip("\"'"): _yaml_scalar(v.strip() or "~") for k, _, v in pairs}
    return text
