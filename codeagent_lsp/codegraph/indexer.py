"""Indexer: walks the workspace roots and keeps the GraphStore current.

What is indexed: files of a supported language, not ignored by .gitignore (nested ones too) or
.git/info/exclude or the caller's globs, outside vendored and generated folders, not generated
("Code generated ... DO NOT EDIT.", "@generated"), not binary, not above max_file_bytes. Nothing
outside the roots is ever read: symlinked folders are not followed (what they point at inside a
root is walked anyway, and following them invites loops), a symlinked file only when it resolves
inside its root and the file it names passes the same rules (a link called `notes.py` to `.env`
is the secret, whatever it is called).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import multiprocessing
import os
import re
import stat
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import tree_sitter
from pathspec import GitIgnoreSpec

from codeagent_lsp.codegraph.extract import extract
from codeagent_lsp.codegraph.languages import language_for
from codeagent_lsp.codegraph.model import FileFacts
from codeagent_lsp.codegraph.store import (
    FileRecord,
    FileRows,
    GraphStore,
    file_rows,
)
from codeagent_lsp.codegraph.walk import GitIgnores, walk
from codeagent_lsp.security.paths import PathPolicy
from codeagent_lsp.security.roots import Root, locate

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
Cancelled = Callable[[], bool]

SKIP_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", "node_modules", "vendor", "third_party", "dist", "build",
        "target", "__pycache__", ".venv", "venv", ".tox", ".nox", ".mypy_cache",
        ".pytest_cache", ".ruff_cache", "site-packages", "dist-packages",
    }
)  # fmt: skip
"""Vendored, generated or tool folders: other people's code, or copies of ours."""
SKIP_SUFFIXES = (".min.js", ".min.mjs", ".bundle.js")
BINARY_PROBE_BYTES = 8192
GENERATED_PROBE_LINES = 10
CHUNK_FILES = 32
"""index_all extracts and commits files this many at a time: far fewer commits than one per file,
and other writers wait at most one chunk."""
POOL_MIN_FILES = 64
"""Fewer new files than this are extracted in this process: starting workers costs a second."""
_GENERATED = re.compile(rb"Code generated .* DO NOT EDIT|@generated")


def default_workers() -> int:
    """Extraction processes for a large first index: the cores this process may use but the one
    that reads and stores, at least 1, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cores or 1) - 1))


@dataclass(frozen=True)
class IndexSummary:
    files: int
    """Files in the index after the run (likewise symbols and references)."""
    symbols: int
    references: int
    skipped: int
    """Files of a supported language left out (binary, too big, generated, unreadable...)."""
    seconds: float
    cancelled: bool
    parsed: int = 0
    """Files (re-)extracted by this run."""
    unchanged: int = 0
    removed: int = 0
    skip_reasons: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    repo: str
    root: Path
    rel: str
    """Relative to the root, posix."""
    target: Path
    """The file to read: the path itself, or a symlink's target inside the root."""
    language: str


@dataclass
class _Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    seen: set[tuple[str, str]] = field(default_factory=set)
    """Files indexed (or open in an editor): what the index keeps."""


@dataclass(frozen=True)
class _Job:
    """A file read, checked and hashed: what is left is to extract and store it, or only to
    record its new mtime when its content is what the index holds (`same`)."""

    candidate: Candidate
    source: bytes
    digest: str
    mtime: float
    size: int
    same: bool = False


Prepared = _Job | str | None
"""Per candidate: a job, "unchanged", why it is skipped, or None (open in an editor)."""


@dataclass(frozen=True)
class _Chunk:
    candidates: list[Candidate]
    prepared: list[Prepared]
    extracted: Future[list[FileRows | str]] | None
    """The facts of its jobs to extract, in order, from a worker; None: extracted here."""

    def to_extract(self) -> list[_Job]:
        return [job for job in self.prepared if isinstance(job, _Job) and not job.same]


def _count(tally: _Tally, candidate: Candidate, outcome: str) -> None:
    if outcome in ("parsed", "unchanged"):
        tally.seen.add((candidate.repo, candidate.rel))
        tally.outcomes[outcome] += 1
    else:
        tally.skipped[outcome] += 1


class _Skip(Exception):
    """A candidate that turns out not to be indexable; the message is the reason."""


class Indexer:
    def __init__(
        self,
        store: GraphStore,
        roots: list[tuple[str, Path]],
        max_file_bytes: int = 1_000_000,
        exclude_globs: tuple[str, ...] | list[str] = (),
        denied: PathPolicy | None = None,
        workers: int = 0,
    ) -> None:
        """`workers`: processes that parse and extract for index_all when it has at least
        POOL_MIN_FILES new files (a first index); 0 = always in this process."""
        self.store = store
        self.workers = workers
        self.denied = denied or PathPolicy()
        """Never indexed, checked before the globs and .gitignore files (whose `!` patterns
        could otherwise re-admit a secret), ignoring case."""
        self.roots = [Root.of(repo, path) for repo, path in roots]
        self.max_file_bytes = max_file_bytes
        self._excludes = GitIgnoreSpec.from_lines(list(exclude_globs)) if exclude_globs else None
        self._ignores = GitIgnores()
        self._open_texts: set[tuple[str, str]] = set()
        self._lock = threading.RLock()
        """Serialises "is it open in an editor?" with storing: index_all runs in a worker."""
        """Files whose index comes from an editor's text, not the disk: index_all leaves them."""

    # --- paths --------------------------------------------------------------------------------

    def set_roots(self, roots: list[tuple[str, Path]]) -> None:
        """The roots to index from now on (workspace folders changed)."""
        with self._lock:
            self.roots = [Root.of(repo, path) for repo, path in roots]

    def root_for(self, path: Path | str) -> tuple[str, str] | None:
        """(repo, path relative to its root, posix) for an absolute path inside a root (the
        deepest one when roots nest), else None."""
        found = locate(self.roots, path)
        return (found[0].repo, found[1]) if found else None

    def _root(self, repo: str) -> Root | None:
        return next((root for root in self.roots if root.repo == repo), None)

    # --- scanning -----------------------------------------------------------------------------

    def scan(self, skipped: Counter[str] | None = None) -> Iterator[Candidate]:
        """The files to index, root by root; `skipped` counts what was left out and why."""
        skipped = Counter() if skipped is None else skipped
        for root in self.roots:
            yield from self._walk(root, "", skipped)

    def _walk(self, root: Root, start: str, skipped: Counter[str]) -> Iterator[Candidate]:
        excluded = functools.partial(self._dir_excluded, root)
        for rel in walk(root, start, roots=self.roots, dir_excluded=excluded, file_links=True):
            candidate = self._candidate(root, rel, skipped)
            if candidate is not None:
                yield candidate

    def _candidate(self, root: Root, rel: str, skipped: Counter[str]) -> Candidate | None:
        language = language_for(rel)
        if language is None or self._file_excluded(root, rel):
            return None
        if rel.endswith(SKIP_SUFFIXES):
            skipped["minified"] += 1
            return None
        path = root.path / rel
        target = path
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root.path) or not target.is_file():
                skipped["symlink outside root"] += 1
                return None
            if self._path_excluded(root, target.relative_to(root.path).as_posix()):
                skipped["symlink to an excluded file"] += 1
                return None
        return Candidate(root.repo, root.path, rel, target, language)

    def _dir_excluded(self, root: Root, rel: str) -> bool:
        return PurePosixPath(rel).name in SKIP_DIRS or self._ignored(root, rel, is_dir=True)

    def _file_excluded(self, root: Root, rel: str) -> bool:
        return self._ignored(root, rel, is_dir=False)

    def _path_excluded(self, root: Root, rel: str) -> bool:
        """For one path out of a walk: its folders count too."""
        parts = rel.split("/")
        for end in range(1, len(parts)):
            if self._dir_excluded(root, "/".join(parts[:end])):
                return True
        return self._file_excluded(root, rel)

    def _ignored(self, root: Root, rel: str, *, is_dir: bool) -> bool:
        """The policy's denials, then the exclude globs, then git's rules."""
        if not (self.denied.allowed_dir(rel) if is_dir else self.denied.allowed(rel)):
            return True
        if self._excludes is not None and self._excludes.match_file(rel + "/" if is_dir else rel):
            return True
        return self._ignores.ignored(root.path, rel, is_dir=is_dir)

    # --- indexing -----------------------------------------------------------------------------

    def index_all(
        self, progress: Progress | None = None, cancelled: Cancelled | None = None
    ) -> IndexSummary:
        """Bring the index in line with the disk: re-extract files whose size, mtime and hash
        changed, drop files that vanished, then resolve imports."""
        started = time.monotonic()
        generation = self.store.generation
        summary = self._index_pass(progress, cancelled, started)
        if self.store.generation != generation and not summary.cancelled:
            # The database was rebuilt under us: what this pass stored before that is gone.
            summary = self._index_pass(progress, cancelled, started)
        return summary

    def _index_pass(
        self, progress: Progress | None, cancelled: Cancelled | None, started: float
    ) -> IndexSummary:
        tally = _Tally(seen=set(self._open_texts))
        self._ignores.clear()  # a full pass rereads them: they may have changed unwatched
        candidates = list(self.scan(tally.skipped))
        modules_changed = self._record_go_modules()
        known = {(f.repo, f.path): f for f in self.store.files()}
        finished = self._index_candidates(candidates, known, tally, progress, cancelled)
        if finished:
            # Only a pass that saw every file may conclude that the others are gone.
            for key in known.keys() - tally.seen:
                self.store.remove_file(*key)
                tally.outcomes["removed"] += 1
            changed = tally.outcomes["parsed"] + tally.outcomes["removed"]
            if changed or modules_changed:
                # Re-resolving every import costs seconds on a large workspace: only when much
                # changed, or go.mod files moved module paths.
                many = changed > max(50, len(known) // 10)
                self.store.resolve_imports(full=many or modules_changed)
        stats = self.store.stats()
        return IndexSummary(
            files=stats.files,
            symbols=stats.symbols,
            references=stats.references,
            skipped=sum(tally.skipped.values()),
            seconds=time.monotonic() - started,
            cancelled=not finished,
            parsed=tally.outcomes["parsed"],
            unchanged=tally.outcomes["unchanged"],
            removed=tally.outcomes["removed"],
            skip_reasons=dict(tally.skipped),
        )

    def _index_candidates(
        self,
        candidates: list[Candidate],
        known: Mapping[tuple[str, str], FileRecord],
        tally: _Tally,
        progress: Progress | None,
        cancelled: Cancelled | None,
    ) -> bool:
        """Index the candidates CHUNK_FILES at a time, each chunk's writes one transaction;
        False when cancelled. With workers, chunks are extracted in other processes while this
        one reads the next ones and stores the finished ones, in order."""
        new = sum((c.repo, c.rel) not in known for c in candidates)
        workers = self.workers if new >= POOL_MIN_FILES else 0
        inflight: deque[_Chunk] = deque()
        done = [0]

        def stored(path: str) -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], len(candidates), path)

        with _Extraction(workers) as extraction:
            for start in range(0, len(candidates) + CHUNK_FILES, CHUNK_FILES):
                chunk = candidates[start : start + CHUNK_FILES]
                if chunk:
                    prepared = [self._prepare(c, known.get((c.repo, c.rel))) for c in chunk]
                    inflight.append(extraction.submit(chunk, prepared))
                # The last round (an empty chunk) drains what is still in flight.
                while inflight and (len(inflight) > 2 * workers or not chunk):
                    if not self._finish(inflight.popleft(), extraction, tally, cancelled, stored):
                        return False
        return True

    def _prepare(self, candidate: Candidate, record: FileRecord | None) -> Prepared:
        if (candidate.repo, candidate.rel) in self._open_texts:
            return None
        try:
            info = os.stat(candidate.target, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                return "not a regular file"
            if info.st_size > self.max_file_bytes:
                return "too big"
            if record is not None and (record.size, record.mtime) == (info.st_size, info.st_mtime):
                return "unchanged"
            source = self._read(candidate.target)
            _check_content(source)
        except _Skip as reason:
            return str(reason)
        except OSError as exc:
            log.debug("codegraph: cannot read %s: %s", candidate.target, exc)
            return "unreadable"
        digest = hashlib.sha256(source).hexdigest()
        same = record is not None and record.sha256 == digest
        return _Job(candidate, source, digest, info.st_mtime, info.st_size, same)

    def _finish(
        self,
        chunk: _Chunk,
        extraction: _Extraction,
        tally: _Tally,
        cancelled: Cancelled | None,
        stored: Callable[[str], None],
    ) -> bool:
        """Store one chunk in one transaction (extracting first what no worker did), count its
        outcomes and call `stored` with each file's path; False when cancelled."""
        facts = extraction.results(chunk, cancelled)
        if facts is None:
            return False
        extracted = iter(facts)
        with self.store.batch():
            for candidate, item in zip(chunk.candidates, chunk.prepared, strict=True):
                if cancelled is not None and cancelled():
                    return False
                if isinstance(item, _Job):
                    _count(tally, candidate, self._store_job(item, extracted))
                elif item is not None:
                    _count(tally, candidate, item)
                stored(candidate.rel)
        return True

    def _index_file(self, candidate: Candidate, record: FileRecord | None) -> str:
        """parsed, unchanged, or why the file was skipped (one file, in this process)."""
        job = self._prepare(candidate, record)
        if not isinstance(job, _Job):
            return job or "unchanged"
        return self._store_job(job, iter([None]))

    def _store_job(self, job: _Job, extracted: Iterator[FileRows | str | None]) -> str:
        """Store a job: its new mtime only when its content is known, else the next facts of
        `extracted` (a string: why extraction failed; None: extract here)."""
        candidate = job.candidate
        if job.same:
            self.store.touch_file(candidate.repo, candidate.rel, job.mtime, job.size)
            return "unchanged"
        facts = next(extracted)
        if isinstance(facts, str):
            log.error("codegraph: cannot extract %s:%s: %s", candidate.repo, candidate.rel, facts)
            return "extract error"
        return self._store(
            candidate.repo,
            candidate.rel,
            candidate.language,
            job.source,
            job.digest,
            job.mtime,
            facts=facts,
        )

    def _store(
        self,
        repo: str,
        rel: str,
        language: str,
        source: bytes,
        digest: str,
        mtime: float,
        tree: tree_sitter.Tree | None = None,
        facts: FileFacts | FileRows | None = None,
    ) -> str:
        """Extract (unless `facts` are given) and store; the disk's version (mtime >= 0) never
        replaces an editor's."""
        if facts is None:
            try:
                facts = extract(source, language, tree)
            except Exception:
                # One file the grammar or a query chokes on must not stop the index.
                log.exception("codegraph: cannot extract %s:%s", repo, rel)
                return "extract error"
        text = source.decode("utf-8", errors="replace")
        with self._lock:
            # Checked again here: the document may have been opened while this was parsed.
            if mtime >= 0 and (repo, rel) in self._open_texts:
                return "unchanged"
            self.store.replace_file(repo, rel, language, digest, mtime, len(source), facts, text)
        return "parsed"

    def _read(self, path: Path) -> bytes:
        # O_NOFOLLOW: a file swapped for a symlink after the scan is not followed out of the root.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(path, flags)
        with os.fdopen(descriptor, "rb") as handle:
            data = handle.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise _Skip("too big")
        return data

    def _record_go_modules(self) -> bool:
        """Tell the store where go.mod files put module paths; True when that changed."""
        modules: dict[str, tuple[str, str]] = {}
        for root in self.roots:
            for go_mod in _go_mod_files(root.path):
                name = _go_module_name(go_mod)
                if name:
                    modules[name] = (root.repo, go_mod.parent.relative_to(root.path).as_posix())
        modules = {name: (repo, "" if d == "." else d) for name, (repo, d) in modules.items()}
        if modules == self.store.go_modules():
            return False
        self.store.set_go_modules(modules)
        return True

    # --- live updates -------------------------------------------------------------------------

    def update_text(
        self, repo: str, path: str, text: str, tree: tree_sitter.Tree | None = None
    ) -> bool:
        """An open document changed: index `text` (not the disk) as (repo, path), from `tree`
        when the caller parsed it already (incrementally). True when the index changed."""
        root = self._root(repo)
        language = language_for(path)
        if root is None or language is None or self._path_excluded(root, path):
            return False
        source = text.encode("utf-8", errors="surrogatepass")
        if len(source) > self.max_file_bytes:
            return False
        digest = hashlib.sha256(source).hexdigest()
        with self._lock:
            self._open_texts.add((repo, path))
            if self.store.file_hash(repo, path) == digest:
                return False
            # mtime -1: the disk differs, so the next index_all after close_text reads it.
            return self._store(repo, path, language, source, digest, -1.0, tree) == "parsed"

    def close_text(self, repo: str, path: str) -> bool:
        """The document closed: the disk is the truth again."""
        self._open_texts.discard((repo, path))
        root = self._root(repo)
        return root is not None and self.update_path(root.path / path)

    def update_path(self, path: Path | str) -> bool:
        """A watched file or folder was created or changed (absolute path). True when the index
        changed; paths outside the roots are ignored."""
        located = self.root_for(path)
        if located is None:
            return False
        repo, rel = located
        root = self._root(repo)
        assert root is not None
        absolute = root.path / rel
        if PurePosixPath(rel).name == ".gitignore" or rel == ".git/info/exclude":
            self._ignores.clear()
            return False  # what it changes is seen by the next index_all
        if not os.path.lexists(absolute):
            return self.remove_path(absolute)
        if not Path(os.path.realpath(absolute.parent)).is_relative_to(root.path):
            return False  # reached through a symlinked folder that leaves the root
        if absolute.is_dir() and not absolute.is_symlink():
            if self._path_excluded_dir(root, rel):
                return False
            skipped: Counter[str] = Counter()
            changed = [self._update_candidate(c) for c in self._walk(root, rel, skipped)]
            return any(changed)
        if (repo, rel) in self._open_texts or self._path_excluded(root, rel):
            return False
        candidate = self._candidate(root, rel, Counter())
        if candidate is None:
            return self.store.remove_file(repo, rel)
        return self._update_candidate(candidate)

    def _path_excluded_dir(self, root: Root, rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ("/".join(parts[:end]) for end in range(1, len(parts) + 1))
        return any(self._dir_excluded(root, prefix) for prefix in prefixes)

    def _update_candidate(self, candidate: Candidate) -> bool:
        key = (candidate.repo, candidate.rel)
        if key in self._open_texts:
            return False
        outcome = self._index_file(candidate, self.store.file_info(*key))
        if outcome == "parsed":
            return True
        if outcome != "unchanged":
            return self.store.remove_file(*key)  # it became binary, too big, generated...
        return False

    def remove_path(self, path: Path | str) -> bool:
        """A watched file or folder was deleted (absolute path)."""
        located = self.root_for(path)
        if located is None:
            return False
        repo, rel = located
        self._open_texts.discard((repo, rel))
        if self.store.remove_file(repo, rel):
            return True
        return self.store.remove_tree(repo, rel) > 0


class _Extraction:
    """Extraction in worker processes, or (no workers, or one died) in this one."""

    def __init__(self, workers: int) -> None:
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            # spawn, not fork: the server that calls this has threads.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(workers, context, initializer=_worker_started)

    def __enter__(self) -> _Extraction:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, candidates: list[Candidate], prepared: list[Prepared]) -> _Chunk:
        chunk = _Chunk(candidates, prepared, None)
        jobs = [(job.source, job.candidate.language) for job in chunk.to_extract()]
        if self._pool is None or not jobs:
            return chunk
        return _Chunk(candidates, prepared, self._pool.submit(_extract_all, jobs))

    def results(self, chunk: _Chunk, cancelled: Cancelled | None) -> list[FileRows | str] | None:
        """The facts (or why not) of each job of the chunk to extract; None when cancelled."""
        if chunk.extracted is not None:
            try:
                return chunk.extracted.result()
            except BrokenProcessPool as exc:
                # A file that crashes the parser costs its chunk this pass, not the server;
                # what is left is extracted here.
                if self._pool is not None:
                    log.error("codegraph: an extraction worker died: %s", exc)
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
                return ["the extraction worker died"] * len(chunk.to_extract())
        results = []
        for job in chunk.to_extract():
            if cancelled is not None and cancelled():
                return None
            results.append(_extract_one(job.source, job.candidate.language))
        return results


def _worker_started() -> None:
    # The server speaks LSP on stdout, which spawned workers share: anything a worker printed
    # there would corrupt the stream.
    os.dup2(2, 1)


def _extract_all(jobs: list[tuple[bytes, str]]) -> list[FileRows | str]:
    """In a worker: the facts of each (source, language), or why there are none."""
    return [_extract_one(source, language) for source, language in jobs]


def _extract_one(source: bytes, language: str) -> FileRows | str:
    try:
        return file_rows(extract(source, language))
    except Exception as exc:  # one file the grammar or a query chokes on must not stop the index
        return f"{type(exc).__name__}: {exc}"


def _check_content(source: bytes) -> None:
    if b"\0" in source[:BINARY_PROBE_BYTES]:
        raise _Skip("binary")
    head = source[:BINARY_PROBE_BYTES].split(b"\n", GENERATED_PROBE_LINES)[:GENERATED_PROBE_LINES]
    if any(_GENERATED.search(line) for line in head):
        raise _Skip("generated")


def _go_mod_files(root: Path) -> Iterator[Path]:
    # go.mod files sit at module roots, rarely deep: a shallow look is enough.
    for depth in range(3):
        for candidate in root.glob("/".join(["*"] * depth + ["go.mod"])):
            if not any(part in SKIP_DIRS for part in candidate.relative_to(root).parts):
                yield candidate


def _go_module_name(go_mod: Path) -> str:
    try:
        text = go_mod.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    match = re.search(r"^\s*module\s+\"?([^\s\"]+)", text, re.MULTILINE)
    return match.group(1) if match else ""
