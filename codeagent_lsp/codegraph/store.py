"""GraphStore: the CodeGraph's facts in one SQLite database per workspace (sqlite-utils, FTS5);
its schema and the opening checks are in `schema`, import resolution in `imports`.

The schema is described in docs/codegraph-schema.md. The database is a cache of what the source
files say, so anything wrong with it (another schema version, a corrupt file, a file deleted while
open) is logged, reported in `GraphStore.status` and rebuilt empty; where it cannot be written
(locked by another process, read-only location) the store runs in memory. Callers never see these
errors, they only see an emptier index that the indexer fills again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar, cast

from sqlite_utils import Database

from codeagent_lsp.codegraph.imports import PathIndex
from codeagent_lsp.codegraph.model import Definition, FileFacts, Import, Reference, Span
from codeagent_lsp.codegraph.schema import (
    CONTENTION,
    CORRUPTION,
    FTS_COLUMNS,
    LOCK_TIMEOUT_S,
    UNWRITABLE,
    State,
    connect_checked,
    create_schema,
    error_code,
    file_db,
    memory_db,
    move_aside,
    unlink_db,
)
from codeagent_lsp.codegraph.words import IDENTIFIER
from codeagent_lsp.lines import split_lines

log = logging.getLogger(__name__)

WINDOW_LINES = 20
"""Lines per code window (non-overlapping), the unit of similar-code retrieval."""
MAX_REFERENCE_CANDIDATES = 8
"""A reference to a name defined in more files than this says nothing about which one it means."""
MAX_QUERY_TERMS = 32
"""search_windows keeps the rarest terms of a query; common ones only slow FTS5 down."""
MAX_SYMBOL_QUERY_WORDS = 8
"""Words of a symbol query that count (each is a prefix scan of the index); the rest are
ignored."""
MAX_SYMBOL_QUERY_CHARS = 256
MAX_SYMBOL_RESULTS = 500
"""Most symbols one query returns, whatever limit is asked."""
OPEN_ATTEMPTS = 3


@dataclass(frozen=True)
class OpenStatus:
    """How the store came to be: what a client should be told when it is not `opened`."""

    state: State
    reason: str = ""
    moved_aside: Path | None = None

    @property
    def persistent(self) -> bool:
        return self.state != "memory"


@dataclass(frozen=True)
class FileRecord:
    id: int
    repo: str
    path: str
    language: str
    sha256: str
    mtime: float
    size: int
    indexed_at: float
    has_errors: bool


@dataclass(frozen=True)
class StoredSymbol:
    id: int
    file_id: int
    repo: str
    path: str
    language: str
    definition: Definition
    score: float = 0.0
    """search_symbols only: higher is better."""


@dataclass(frozen=True)
class StoredReference:
    file_id: int
    repo: str
    path: str
    reference: Reference


@dataclass(frozen=True)
class WindowHit:
    repo: str
    path: str
    start_line: int
    end_line: int
    """Inclusive, 0-based."""
    text: str
    score: float
    """Higher is better (negated BM25)."""


class Edge(NamedTuple):
    """A NamedTuple: graph builds create one per edge, and frozen dataclasses are slow to make."""

    src_kind: str
    src_id: int
    dst_kind: str
    dst_id: int
    type: str
    """import (file -> file) or reference (file -> symbol)."""
    weight: float


@dataclass(frozen=True)
class Stats:
    files: int
    symbols: int
    references: int
    imports: int = 0
    resolved_imports: int = 0
    edges: int = 0
    windows: int = 0


def default_db_path(workspace_root: Path) -> Path:
    """$XDG_CACHE_HOME/codeagent-lsp/codegraph/<name>-<hash of the resolved root>.db."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = Path(workspace_root).expanduser().resolve()
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    name = re.sub(r"[^\w.-]", "_", root.name) or "root"
    return Path(cache) / "codeagent-lsp" / "codegraph" / f"{name}-{digest}.db"


def open_store(path: Path | str | None, *, lock_timeout: float = LOCK_TIMEOUT_S) -> GraphStore:
    """Open (creating, rebuilding or falling back to memory as needed) the store at `path`;
    None or ":memory:" opens an in-memory store. Never raises for database trouble."""
    if path is None or str(path) == ":memory:":
        return GraphStore(memory_db(), None, OpenStatus("memory", "requested"))
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fallback(path, f"cannot create {path.parent}: {exc.strerror or exc}")
    try:
        return _open_file(path, lock_timeout)
    except sqlite3.DatabaseError as exc:
        code = error_code(exc)
        if code in CONTENTION:
            return _fallback(path, f"database is locked by another process ({exc})")
        if code in UNWRITABLE:
            return _fallback(path, f"cannot write the database ({exc})")
        return _fallback(path, f"unexpected database error ({exc})")
    except OSError as exc:
        return _fallback(path, f"cannot use {path}: {exc.strerror or exc}")


def _open_file(path: Path, lock_timeout: float) -> GraphStore:
    moved: Path | None = None
    for attempt in range(OPEN_ATTEMPTS):
        try:
            db, state, reason = connect_checked(path, lock_timeout)
            if moved is not None:
                state, reason = "rebuilt", f"corrupt database moved to {moved}, rebuilt"
            return GraphStore(db, path, OpenStatus(state, reason, moved))
        except sqlite3.DatabaseError as exc:
            code = error_code(exc)
            if code in CORRUPTION and moved is None:
                moved = move_aside(path)
                log.warning("codegraph: %s is corrupt (%s), moved to %s", path, exc, moved)
                continue
            if code in CONTENTION and attempt + 1 < OPEN_ATTEMPTS:
                time.sleep(lock_timeout / 2)
                continue
            raise
    raise sqlite3.OperationalError("database is locked")


def _fallback(path: Path, reason: str) -> GraphStore:
    log.warning("codegraph: %s; using an in-memory index", reason)
    return GraphStore(memory_db(), None, OpenStatus("memory", reason))


P = ParamSpec("P")
R = TypeVar("R")


def _guarded(
    default: Callable[[], Any], *, write: bool = False
) -> Callable[[Callable[Concatenate[GraphStore, P], R]], Callable[Concatenate[GraphStore, P], R]]:
    """Serialise the call, and recover from database trouble instead of raising it: corruption
    rebuilds the file, an unwritable one moves to memory (both retry the call once); a lock held
    too long by another process skips the call, returning default()."""

    def decorate(
        method: Callable[Concatenate[GraphStore, P], R],
    ) -> Callable[Concatenate[GraphStore, P], R]:
        @functools.wraps(method)
        def wrapper(self: GraphStore, *args: P.args, **kwargs: P.kwargs) -> R:
            with self._lock:
                if write:
                    self._ensure_file()
                for attempt in range(2):
                    try:
                        return method(self, *args, **kwargs)
                    except sqlite3.DatabaseError as exc:
                        if attempt or not self._recover(exc, method.__name__):
                            if error_code(exc) in CONTENTION:
                                log.warning("codegraph: %s skipped: %s", method.__name__, exc)
                                return default()
                            raise
            raise AssertionError("unreachable")

        return wrapper

    return decorate


class GraphStore:
    """One workspace's CodeGraph. Thread-safe: every method holds the store's lock."""

    def __init__(self, db: Database, path: Path | None, status: OpenStatus) -> None:
        self.db = db
        self.path = path
        self.status = status
        self.generation = 0
        """Bumped whenever the database is rebuilt behind the caller's back: its contents are
        gone and a full index is due."""
        self._lock = threading.RLock()
        self._identity = self._file_identity()
        self._paths: PathIndex | None = None
        self._dirty: tuple[set[int], set[str]] | None = None
        """Files and definition names whose edges are stale; None: unknown, rebuild them all
        (a database left dirty by an earlier process)."""
        self.db.execute("PRAGMA foreign_keys=ON")
        if not self._edges_dirty():
            self._dirty = (set(), set())

    @classmethod
    def open(cls, path: Path | str | None, *, lock_timeout: float = LOCK_TIMEOUT_S) -> GraphStore:
        return open_store(path, lock_timeout=lock_timeout)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # --- recovery -----------------------------------------------------------------------------

    def _file_identity(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def _ensure_file(self) -> None:
        """A database file deleted (or replaced) while open would swallow every later write."""
        if self.path is None or self._file_identity() == self._identity:
            return
        self._rebuild(f"{self.path} was deleted or replaced while open", moved=None)

    def _recover(self, exc: sqlite3.DatabaseError, operation: str) -> bool:
        code = error_code(exc)
        if code in CORRUPTION and self.path is not None:
            self.db.close()
            moved = move_aside(self.path)
            self._rebuild(f"database corrupt during {operation} ({exc})", moved=moved)
            return True
        if code in UNWRITABLE and self.path is not None:
            self._to_memory(f"cannot write the database during {operation} ({exc})")
            return True
        return False

    def _rebuild(self, reason: str, moved: Path | None) -> None:
        assert self.path is not None
        log.warning("codegraph: %s; rebuilding the index", reason)
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        try:
            unlink_db(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = file_db(self.path, LOCK_TIMEOUT_S)
            create_schema(self.db)
            self.db.execute("PRAGMA foreign_keys=ON")
            self.status = OpenStatus("rebuilt", reason, moved)
            self._identity = self._file_identity()
            self._dirty = (set(), set())
        except (OSError, sqlite3.Error) as exc:
            self._to_memory(f"{reason}; cannot recreate it ({exc})")
        self._paths = None
        self.generation += 1

    def _to_memory(self, reason: str) -> None:
        log.warning("codegraph: %s; using an in-memory index", reason)
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        self.db = memory_db()
        self.db.execute("PRAGMA foreign_keys=ON")
        self.path = None
        self._identity = None
        self.status = OpenStatus("memory", reason)
        self._paths = None
        self._dirty = (set(), set())
        self.generation += 1

    # --- writes -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group many writes in one transaction (each still atomic on its own): a full index
        committing file by file spends a third of its time in commits and WAL checkpoints.
        Other threads' writes made meanwhile join the batch."""
        with self._lock:
            self._ensure_file()
            if not self.db.conn.in_transaction:
                self.db.execute("BEGIN")
        try:
            yield
        finally:
            with self._lock:
                try:
                    self.db.commit()
                except sqlite3.DatabaseError as exc:
                    if not self._recover(exc, "commit"):
                        log.warning("codegraph: batch lost: %s", exc)
                        self.db.rollback()

    @_guarded(lambda: 0, write=True)
    def replace_file(
        self,
        repo: str,
        path: str,
        language: str,
        sha256: str,
        mtime: float,
        size: int,
        facts: FileFacts | FileRows,
        text: str,
    ) -> int:
        """Store one file's facts (or their rows, from `file_rows`) in place of what was known
        about it (one transaction); keeps its id, so resolved imports of other files stay
        valid. Returns the file id."""
        rows = facts if isinstance(facts, FileRows) else file_rows(facts)
        record = {
            "repo": repo,
            "path": path,
            "language": language,
            "sha256": sha256,
            "mtime": mtime,
            "size": size,
            "indexed_at": time.time(),
            "has_errors": int(rows.has_errors),
        }
        with self.db.atomic():
            file_id = self._file_id(repo, path)
            names = {symbol[0] for symbol in rows.symbols}
            if file_id is None:
                file_id = cast(int, self.db.table("files").insert(record).last_pk)
                self._paths = None
                self._insert_contents(file_id, rows, text)
            else:
                self.db.table("files").update(file_id, record)
                names |= self._defined_names(file_id)
                self._update_contents(file_id, rows, text)
            self._mark_edges_dirty({file_id}, names)
        return file_id

    @_guarded(lambda: False, write=True)
    def touch_file(self, repo: str, path: str, mtime: float, size: int) -> bool:
        """Record a new mtime for a file whose content hash did not change."""
        cursor = self.db.execute(
            "UPDATE files SET mtime = ?, size = ? WHERE repo = ? AND path = ?",
            [mtime, size, repo, path],
        )
        return cursor.rowcount > 0

    @_guarded(lambda: False, write=True)
    def remove_file(self, repo: str, path: str) -> bool:
        with self.db.atomic():
            file_id = self._file_id(repo, path)
            if file_id is None:
                return False
            self._delete_file(file_id)
        return True

    @_guarded(lambda: 0, write=True)
    def remove_tree(self, repo: str, directory: str) -> int:
        """Remove every file under `directory` (relative, posix; "" is the whole repo)."""
        prefix = directory.strip("/")
        rows = self.db.execute(
            "SELECT id FROM files WHERE repo = ?"
            " AND (? = '' OR path = ? OR substr(path, 1, ?) = ?)",
            [repo, prefix, prefix, len(prefix) + 1, prefix + "/"],
        ).fetchall()
        with self.db.atomic():
            for (file_id,) in rows:
                self._delete_file(file_id)
        return len(rows)

    @_guarded(lambda: None, write=True)
    def set_go_modules(self, modules: Mapping[str, tuple[str, str]]) -> None:
        """Go module paths (from go.mod) -> (repo, directory), for resolve_imports."""
        value = json.dumps({name: list(where) for name, where in sorted(modules.items())})
        self.db.table("meta").upsert({"key": "go_modules", "value": value}, pk="key")

    def _file_id(self, repo: str, path: str) -> int | None:
        row = self.db.execute(
            "SELECT id FROM files WHERE repo = ? AND path = ?", [repo, path]
        ).fetchone()
        return int(row[0]) if row else None

    def _delete_contents(self, file_id: int) -> None:
        self._index_text(file_id, delete=True)
        self.db.execute(
            "DELETE FROM edges WHERE (src_kind = 'file' AND src_id = ?) OR (dst_kind = 'symbol'"
            " AND dst_id IN (SELECT id FROM symbols WHERE file_id = ?))",
            [file_id, file_id],
        )
        for table in ("symbols", "refs", "imports", "windows"):
            self.db.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])

    def _update_contents(self, file_id: int, rows: FileRows, text: str) -> None:
        """A stored file's new facts. Symbols (which edges and searches name by id) and imports
        are written again; references and windows only where they differ: an edit leaves most
        of them as they were, and every row written costs B-tree and FTS pages, the commit and
        the WAL checkpoints that follow (most of a large file's update, the next edits'
        critical path)."""
        self._index_text(file_id, delete=True, tables=("symbols",))
        self.db.execute(
            "DELETE FROM edges WHERE (src_kind = 'file' AND src_id = ?) OR (dst_kind = 'symbol'"
            " AND dst_id IN (SELECT id FROM symbols WHERE file_id = ?))",
            [file_id, file_id],
        )
        for table in ("symbols", "imports"):
            self.db.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])
        self._insert_rows("symbols", _SYMBOL_COLUMNS, file_id, rows.symbols)
        self._insert_rows("imports", _IMPORT_COLUMNS, file_id, rows.imports)
        self._index_text(file_id, tables=("symbols",))
        self._update_rows("refs", _REF_COLUMNS, file_id, rows.refs)
        self._update_rows("windows", _WINDOW_COLUMNS, file_id, _windows(text), fts=True)

    def _update_rows(
        self,
        table: str,
        columns: tuple[str, ...],
        file_id: int,
        rows: Iterable[Row],
        *,
        fts: bool = False,
    ) -> None:
        """Make a file's rows of `table` equal to `rows` (as a multiset), deleting and
        inserting only the difference; `fts`: keep the table's FTS index in step."""
        names = ", ".join(columns)
        wanted = Counter(tuple(row) for row in rows)
        stale = []
        for row_id, *values in self.db.execute(
            f"SELECT id, {names} FROM {table} WHERE file_id = ?", [file_id]
        ):
            key = tuple(values)
            if wanted[key] > 0:
                wanted[key] -= 1
            else:
                stale.append((row_id,))
        if fts:
            indexed = ", ".join(FTS_COLUMNS[table])
            self.db.conn.executemany(
                f"INSERT INTO {table}_fts ({table}_fts, rowid, {indexed})"
                f" SELECT 'delete', id, {indexed} FROM {table} WHERE id = ?",
                stale,
            )
        self.db.conn.executemany(f"DELETE FROM {table} WHERE id = ?", stale)
        last = self.db.execute(f"SELECT max(id) FROM {table}").fetchone()[0] or 0
        self._insert_rows(table, columns, file_id, wanted.elements())
        if fts:
            self.db.execute(
                f"INSERT INTO {table}_fts (rowid, {indexed})"
                f" SELECT id, {indexed} FROM {table} WHERE file_id = ? AND id > ?",
                [file_id, last],
            )

    def _delete_file(self, file_id: int) -> None:
        names = self._defined_names(file_id)
        importers = {
            row[0]
            for row in self.db.execute(
                "SELECT DISTINCT file_id FROM imports WHERE resolved_file_id = ?", [file_id]
            )
        }
        self._delete_contents(file_id)
        self.db.execute("DELETE FROM edges WHERE dst_kind = 'file' AND dst_id = ?", [file_id])
        self.db.execute(
            "UPDATE imports SET resolved_file_id = NULL WHERE resolved_file_id = ?", [file_id]
        )
        self.db.execute("DELETE FROM files WHERE id = ?", [file_id])
        self._paths = None
        self._mark_edges_dirty(importers, names)

    def _defined_names(self, file_id: int) -> set[str]:
        rows = self.db.execute("SELECT DISTINCT name FROM symbols WHERE file_id = ?", [file_id])
        return {row[0] for row in rows}

    def _insert_contents(self, file_id: int, rows: FileRows, text: str) -> None:
        # Plain executemany: sqlite-utils' insert_all inspects every value of every row, which
        # made it half the cost of indexing the standard library.
        self._insert_rows("symbols", _SYMBOL_COLUMNS, file_id, rows.symbols)
        self._insert_rows("refs", _REF_COLUMNS, file_id, rows.refs)
        self._insert_rows("imports", _IMPORT_COLUMNS, file_id, rows.imports)
        self._insert_rows("windows", _WINDOW_COLUMNS, file_id, _windows(text))
        self._index_text(file_id)

    def _index_text(
        self, file_id: int, *, delete: bool = False, tables: Iterable[str] = FTS_COLUMNS
    ) -> None:
        """Add a file's rows of `tables` (symbols and windows) to their FTS tables, or (before
        deleting the rows) take them out."""
        for table in tables:
            columns = FTS_COLUMNS[table]
            names = ", ".join(columns)
            command, value = (f"{table}_fts, ", "'delete', ") if delete else ("", "")
            self.db.execute(
                f"INSERT INTO {table}_fts ({command}rowid, {names})"
                f" SELECT {value}id, {names} FROM {table} WHERE file_id = ?",
                [file_id],
            )

    def _insert_rows(
        self, table: str, columns: tuple[str, ...], file_id: int, rows: Iterable[Row]
    ) -> None:
        values = ", ".join("?" * (len(columns) + 1))
        sql = f"INSERT INTO {table} (file_id, {', '.join(columns)}) VALUES ({values})"
        self.db.conn.executemany(sql, ((file_id, *row) for row in rows))

    def _mark_edges_dirty(self, files: set[int], names: set[str]) -> None:
        """Edges go stale lazily: edges() brings them up to date (see resolve_imports)."""
        self.db.execute("UPDATE meta SET value = '1' WHERE key = 'edges_dirty'")
        if self._dirty is not None:
            self._dirty[0].update(files)
            self._dirty[1].update(names)

    # --- reads --------------------------------------------------------------------------------

    @_guarded(lambda: None)
    def file_hash(self, repo: str, path: str) -> str | None:
        record = self.file_info(repo, path)
        return record.sha256 if record else None

    @_guarded(lambda: None)
    def file_info(self, repo: str, path: str) -> FileRecord | None:
        rows = list(self.db.query("SELECT * FROM files WHERE repo = ? AND path = ?", [repo, path]))
        return _file_record(rows[0]) if rows else None

    @_guarded(list)
    def files(self, repo: str | None = None) -> list[FileRecord]:
        sql, params = "SELECT * FROM files", []
        if repo is not None:
            sql, params = sql + " WHERE repo = ?", [repo]
        return [_file_record(row) for row in self.db.query(sql + " ORDER BY repo, path", params)]

    @_guarded(list)
    def definitions(self, name: str, limit: int | None = None) -> list[StoredSymbol]:
        """Definitions named `name`, or whose qualified name is `name` ("Shape.area"); at most
        `limit` when given (callers that skip too common names ask for one more than they use)."""
        params: dict[str, Any] = {"name": name}
        if limit is not None:
            params["limit"] = limit
        return self._symbols("s.name = :name OR s.qualified_name = :name", params)

    @_guarded(list)
    def symbols_in(self, repo: str, path: str) -> list[StoredSymbol]:
        return self._symbols("f.repo = :repo AND f.path = :path", {"repo": repo, "path": path})

    @_guarded(list)
    def symbol(self, symbol_id: int) -> list[StoredSymbol]:
        """The symbol with this id (as a 0/1-element list), e.g. an edge's destination."""
        return self._symbols("s.id = :id", {"id": symbol_id})

    @_guarded(dict)
    def symbol_owners(self) -> dict[int, int]:
        """Every symbol's id -> its file's id (graph nodes back to their files)."""
        return dict(self.db.execute("SELECT id, file_id FROM symbols").fetchall())

    @_guarded(list)
    def references(self, name: str) -> list[StoredReference]:
        rows = self.db.query(
            "SELECT r.*, f.repo, f.path FROM refs r JOIN files f ON f.id = r.file_id"
            " WHERE r.name = ? ORDER BY f.repo, f.path, r.line, r.col",
            [name],
        )
        return [_stored_reference(row) for row in rows]

    @_guarded(list)
    def search_symbols(self, query: str, limit: int = 20) -> list[StoredSymbol]:
        """Symbols whose name (or its camelCase/snake_case words), qualified name, signature or doc
        start with every word of `query`, best first: exact names, then BM25 (names weigh most)."""
        # Bounded work whoever asks: each word is a prefix scan of the FTS index, and 10,000
        # of them kept a core busy for minutes.
        words = re.findall(r"\w+", query[:MAX_SYMBOL_QUERY_CHARS].lower())[:MAX_SYMBOL_QUERY_WORDS]
        if not words:
            return []
        match = " ".join(f'"{word}"*' for word in words)
        return self._symbols(
            "1 = 1",
            {"match": match, "exact": query, "limit": min(limit, MAX_SYMBOL_RESULTS)},
            select_score="-bm25(symbols_fts, 10.0, 4.0, 2.0, 1.0)",
            order="(s.name = :exact) DESC, score DESC, length(s.name), f.path",
            fts_join=True,
        )

    @_guarded(list)
    def search_windows(
        self,
        query_text: str,
        limit: int = 10,
        exclude: tuple[str, str] | None = None,
        exclude_lines: range | None = None,
    ) -> list[WindowHit]:
        """Code windows most like `query_text` (BM25 over its rarest identifiers' words), best
        first; windows of the `exclude` (repo, path) file are left out, or with
        `exclude_lines` (0-based document lines) only those that share a line with it."""
        terms = self._rare_terms(query_text)
        if not terms:
            return []
        match = " OR ".join(f'"{term}"' for term in terms)
        repo, path = exclude or ("", "\0")
        lines = exclude_lines if exclude_lines is not None else range(0, 2**62)
        rows = self.db.query(
            "SELECT f.repo, f.path, w.start_line, w.end_line, w.text,"
            " -bm25(windows_fts) AS score FROM windows_fts"
            " JOIN windows w ON w.id = windows_fts.rowid JOIN files f ON f.id = w.file_id"
            " WHERE windows_fts MATCH ? AND NOT (f.repo = ? AND f.path = ?"
            " AND w.end_line >= ? AND w.start_line < ?)"
            " ORDER BY bm25(windows_fts), f.repo, f.path, w.start_line LIMIT ?",
            [match, repo, path, lines.start, lines.stop, limit],
        )
        return [WindowHit(**row) for row in rows]

    @_guarded(lambda: Stats(0, 0, 0))
    def stats(self) -> Stats:
        counts = {
            table: self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("files", "symbols", "refs", "imports", "edges", "windows")
        }
        resolved = self.db.execute(
            "SELECT count(*) FROM imports WHERE resolved_file_id IS NOT NULL"
        ).fetchone()[0]
        return Stats(
            files=counts["files"],
            symbols=counts["symbols"],
            references=counts["refs"],
            imports=counts["imports"],
            resolved_imports=resolved,
            edges=counts["edges"],
            windows=counts["windows"],
        )

    @_guarded(list)
    def imports_of(self, repo: str, path: str) -> list[tuple[Import, FileRecord | None]]:
        """A file's imports with the workspace file each resolved to, if any (resolving what
        changed since the last resolve_imports() first)."""
        if self._edges_dirty():
            self.resolve_imports()
        rows = self.db.query(
            "SELECT i.*, t.id AS t_id, t.repo AS t_repo, t.path AS t_path,"
            " t.language AS t_language, t.sha256 AS t_sha256, t.mtime AS t_mtime,"
            " t.size AS t_size, t.indexed_at AS t_indexed_at, t.has_errors AS t_has_errors"
            " FROM imports i JOIN files f ON f.id = i.file_id"
            " LEFT JOIN files t ON t.id = i.resolved_file_id"
            " WHERE f.repo = ? AND f.path = ? ORDER BY i.line, i.id",
            [repo, path],
        )
        result = []
        for row in rows:
            target = None
            if row["t_id"] is not None:
                target = _file_record({k[2:]: v for k, v in row.items() if k.startswith("t_")})
            span = None if row["line"] is None else Span(row["line"], 0, row["line"], 0)
            names = tuple(json.loads(row["names"] or "[]"))
            result.append((Import(row["module"], names, row["alias"] or "", span), target))
        return result

    @_guarded(list)
    def importers(self, repo: str, path: str) -> list[tuple[str, str]]:
        """(repo, path) of the files with an import resolved to this file."""
        if self._edges_dirty():
            self.resolve_imports()
        rows = self.db.execute(
            "SELECT DISTINCT f.repo, f.path FROM imports i JOIN files f ON f.id = i.file_id"
            " JOIN files t ON t.id = i.resolved_file_id WHERE t.repo = ? AND t.path = ?"
            " ORDER BY f.repo, f.path",
            [repo, path],
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def _symbols(
        self,
        where: str,
        params: dict[str, Any],
        *,
        select_score: str = "0.0",
        order: str = "f.repo, f.path, s.start_line, s.start_col",
        fts_join: bool = False,
    ) -> list[StoredSymbol]:
        join = " JOIN symbols_fts ON symbols_fts.rowid = s.id" if fts_join else ""
        fts_where = " AND symbols_fts MATCH :match" if fts_join else ""
        limit = " LIMIT :limit" if "limit" in params else ""
        sql = (
            f"SELECT s.*, f.repo, f.path, f.language, {select_score} AS score"
            f" FROM symbols s JOIN files f ON f.id = s.file_id{join}"
            f" WHERE ({where}){fts_where} ORDER BY {order}{limit}"
        )
        return [_stored_symbol(row) for row in self.db.query(sql, params)]

    def _rare_terms(self, text: str) -> list[str]:
        words = {
            part.lower()
            for ident in IDENTIFIER.findall(text)
            for part in ident.split("_")
            if len(part) > 1
        }
        if not words:
            return []
        frequency: dict[str, int] = {}
        ordered = sorted(words)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for term, doc in self.db.execute(
                f"SELECT term, doc FROM windows_vocab WHERE term IN ({marks})", chunk
            ):
                frequency[term] = doc
        return sorted(frequency, key=lambda term: (frequency[term], term))[:MAX_QUERY_TERMS]

    # --- imports and edges --------------------------------------------------------------------

    @_guarded(lambda: 0, write=True)
    def resolve_imports(self, full: bool = False) -> int:
        """Point imports at the workspace files they name (only unresolved ones unless `full`),
        then bring the edges up to date: those of changed files and names only, unless `full`
        or too much changed. Returns how many imports are resolved in all."""
        paths = self._path_index()
        go_modules = self._go_modules()
        where = "" if full else " WHERE i.resolved_file_id IS NULL"
        rows = self.db.execute(
            "SELECT i.id, i.file_id, i.resolved_file_id, i.module, i.names, f.repo, f.path,"
            f" f.language FROM imports i JOIN files f ON f.id = i.file_id{where}"
        ).fetchall()
        updates, changed = [], set()
        for import_id, file_id, current, module, names, repo, path, language in rows:
            first = _first_name(names)
            target = paths.resolve(go_modules, repo, path, language, module, first)
            if target != current:
                updates.append((target, import_id))
                changed.add(file_id)
        with self.db.atomic():
            self.db.conn.executemany(
                "UPDATE imports SET resolved_file_id = ? WHERE id = ?", updates
            )
            dirty = self._dirty
            if full or dirty is None or len(dirty[0] | changed) > max(50, len(paths.by_key) // 10):
                self._rebuild_edges(paths, None)
            elif changed or dirty[0] or dirty[1]:
                self._rebuild_edges(paths, (dirty[0] | changed, dirty[1]))
            self.db.execute("UPDATE meta SET value = '0' WHERE key = 'edges_dirty'")
        self._dirty = (set(), set())
        return int(
            self.db.execute(
                "SELECT count(*) FROM imports WHERE resolved_file_id IS NOT NULL"
            ).fetchone()[0]
        )

    @_guarded(list)
    def edges(self, type: str | None = None) -> list[Edge]:
        """The import and reference edges, brought up to date first if files changed since the
        last resolve_imports()."""
        if self._edges_dirty():
            self.resolve_imports()
        sql = "SELECT src_kind, src_id, dst_kind, dst_id, type, weight FROM edges"
        params = []
        if type is not None:
            sql, params = sql + " WHERE type = ?", [type]
        # Tuples, not sqlite-utils' dicts: a graph build reads every edge (130k for the stdlib).
        return [Edge(*row) for row in self.db.execute(sql + " ORDER BY id", params)]

    def _edges_dirty(self) -> bool:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'edges_dirty'").fetchone()
        return bool(row and row[0] == "1")

    @_guarded(dict)
    def go_modules(self) -> dict[str, tuple[str, str]]:
        """What set_go_modules() recorded."""
        return self._go_modules()

    def _go_modules(self) -> dict[str, tuple[str, str]]:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'go_modules'").fetchone()
        return {k: (v[0], v[1]) for k, v in json.loads(row[0]).items()} if row else {}

    def _path_index(self) -> PathIndex:
        if self._paths is None:
            self._paths = PathIndex.build(
                self.db.execute("SELECT id, repo, path, language FROM files")
            )
        return self._paths

    def _rebuild_edges(self, paths: PathIndex, scope: tuple[set[int], set[str]] | None) -> None:
        """All edges (scope None), or those from the scope's files and to its names' symbols:
        nothing else can have changed, since a reference edge depends only on its file's
        imports and on which files define the name."""
        if scope is None:
            self.db.execute("DELETE FROM edges")
            files = names = None
            uses_where, params = "", []
        else:
            files, names = json.dumps(sorted(scope[0])), json.dumps(sorted(scope[1]))
            self.db.execute(
                "DELETE FROM edges WHERE src_kind = 'file' AND src_id IN"
                " (SELECT value FROM json_each(?))",
                [files],
            )
            self.db.execute(
                "DELETE FROM edges WHERE dst_kind = 'symbol' AND dst_id IN (SELECT id FROM symbols"
                " WHERE name IN (SELECT value FROM json_each(?)))",
                [names],
            )
            uses_where = (
                " WHERE file_id IN (SELECT value FROM json_each(?))"
                " OR name IN (SELECT value FROM json_each(?))"
            )
            params = [files, names]
        insert = (
            "INSERT INTO edges (src_kind, src_id, dst_kind, dst_id, type, weight)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )
        self.db.conn.executemany(insert, self._import_edges(paths, files))
        uses = self.db.execute(
            f"SELECT file_id, name, count(*) FROM refs{uses_where} GROUP BY file_id, name", params
        ).fetchall()
        self.db.conn.executemany(insert, self._reference_edges(uses))

    def _import_edges(self, paths: PathIndex, files: str | None) -> list[tuple[Any, ...]]:
        where = "" if files is None else " AND i.file_id IN (SELECT value FROM json_each(?))"
        rows = self.db.execute(
            "SELECT i.file_id, i.resolved_file_id, t.repo, t.path, t.language FROM imports i"
            " JOIN files t ON t.id = i.resolved_file_id"
            f" WHERE i.file_id != i.resolved_file_id{where}",
            [] if files is None else [files],
        )
        weights: dict[tuple[int, int], float] = defaultdict(float)
        for src, dst, repo, path, language in rows:
            # A Go import names a package, i.e. every non-test file of its directory.
            targets = [dst]
            if language == "go":
                siblings = paths.files_in_dir.get((repo, posixpath.dirname(path)), [])
                targets = [
                    fid
                    for p, fid, lang in siblings
                    if lang == "go" and not p.endswith("_test.go") and fid != src
                ] or [dst]
            for target in targets:
                weights[(src, target)] += 1.0 / len(targets)
        return [("file", s, "file", d, "import", w) for (s, d), w in weights.items()]

    def _reference_edges(self, uses: list[tuple[int, str, int]]) -> Iterator[tuple[Any, ...]]:
        """file -> symbol for each name a file uses and other files define. A name the file
        defines itself is taken as its own; among several definitions, those in files it imports
        win; otherwise a name defined in more than MAX_REFERENCE_CANDIDATES files is too common
        to mean anything. Weight: uses / candidates."""
        used = json.dumps(sorted({name for _, name, _ in uses}))
        defined: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for symbol_id, file_id, name in self.db.execute(
            "SELECT id, file_id, name FROM symbols WHERE name IN (SELECT value FROM json_each(?))",
            [used],
        ):
            defined[name].append((symbol_id, file_id))
        defining = {name: {fid for _, fid in found} for name, found in defined.items()}
        imported: dict[int, set[int]] = defaultdict(set)
        for src, dst in self.db.execute(
            "SELECT src_id, dst_id FROM edges WHERE type = 'import' AND src_id IN"
            " (SELECT value FROM json_each(?))",
            [json.dumps(sorted({file_id for file_id, _, _ in uses}))],
        ):
            imported[src].add(dst)
        for file_id, name, count in uses:
            files = defining.get(name)
            if not files or file_id in files:
                continue
            candidates = defined[name]
            mine = imported.get(file_id)
            preferred = [c for c in candidates if c[1] in mine] if mine else []
            if preferred:
                candidates = preferred
            elif len(files) > MAX_REFERENCE_CANDIDATES:
                continue
            for symbol_id, _ in candidates:
                yield "file", file_id, "symbol", symbol_id, "reference", count / len(candidates)


def _first_name(names: str | None) -> str | None:
    found = json.loads(names or "[]")
    return found[0] if found else None


# --- rows ---------------------------------------------------------------------------------------


def _words(name: str) -> str:
    """The name, then its camelCase / snake_case words, so FTS5 finds "parseConfig" by "conf"."""
    parts = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\d|\b|_)|[A-Z]?[a-z]+|[A-Z]+|\d+", name)
    return " ".join([name, *parts]) if len(parts) > 1 else name


Row = tuple[Any, ...]
"""One row's values in the order of its table's columns below, its file_id left out."""
_SYMBOL_COLUMNS = ("name", "qualified_name", "kind", "signature", "doc", "scope", "start_line",
                   "start_col", "end_line", "end_col", "name_line", "name_col", "name_end_col",
                   "words")  # fmt: skip
_REF_COLUMNS = ("name", "kind", "scope", "line", "col", "end_col")
_IMPORT_COLUMNS = ("module", "names", "alias", "line", "resolved_file_id")
_WINDOW_COLUMNS = ("start_line", "end_line", "text")


class FileRows(NamedTuple):
    """A file's facts as the store's rows (`file_rows`): what indexing workers send back, since
    tuples of plain values pickle about twenty times faster than the facts' dataclasses."""

    symbols: list[Row]
    refs: list[Row]
    imports: list[Row]
    has_errors: bool


def file_rows(facts: FileFacts) -> FileRows:
    return FileRows(
        [_symbol_row(d) for d in facts.definitions],
        [_ref_row(r) for r in facts.references],
        [_import_row(i) for i in facts.imports],
        facts.has_errors,
    )


def _symbol_row(definition: Definition) -> Row:
    span, name_span = definition.span, definition.name_span
    return (
        definition.name,
        definition.qualified_name,
        definition.kind,
        definition.signature,
        definition.doc,
        definition.scope,
        span.start_line,
        span.start_col,
        span.end_line,
        span.end_col,
        name_span.start_line,
        name_span.start_col,
        name_span.end_col,
        _words(definition.name),
    )


def _ref_row(reference: Reference) -> Row:
    span = reference.span
    end_col = span.end_col if span.end_line == span.start_line else span.start_col
    return (
        reference.name,
        reference.kind,
        reference.scope,
        span.start_line,
        span.start_col,
        end_col,
    )


def _import_row(item: Import) -> Row:
    line = item.span.start_line if item.span else None
    return (item.module, json.dumps(list(item.names)), item.alias, line, None)


def _windows(text: str) -> Iterator[Row]:
    # Rows on LSP's lines, like every other row of the CodeGraph: splitlines() would also
    # split at form feeds and U+2028, and the rows would drift.
    lines = split_lines(text)
    if len(lines) > 1 and not lines[-1]:
        lines.pop()  # the empty line after a final line break
    for start in range(0, len(lines), WINDOW_LINES):
        chunk = "\n".join(lines[start : start + WINDOW_LINES])
        if chunk.strip():
            yield (start, min(start + WINDOW_LINES, len(lines)) - 1, chunk)


def _file_record(row: Mapping[str, Any]) -> FileRecord:
    return FileRecord(
        id=row["id"],
        repo=row["repo"],
        path=row["path"],
        language=row["language"],
        sha256=row["sha256"],
        mtime=row["mtime"],
        size=row["size"],
        indexed_at=row["indexed_at"],
        has_errors=bool(row["has_errors"]),
    )


def _stored_symbol(row: Mapping[str, Any]) -> StoredSymbol:
    name_end = row["name_end_col"]
    definition = Definition(
        name=row["name"],
        kind=row["kind"],
        span=Span(row["start_line"], row["start_col"], row["end_line"], row["end_col"]),
        name_span=Span(row["name_line"], row["name_col"], row["name_line"], name_end),
        signature=row["signature"],
        doc=row["doc"],
        scope=row["scope"],
    )
    return StoredSymbol(
        id=row["id"],
        file_id=row["file_id"],
        repo=row["repo"],
        path=row["path"],
        language=row["language"],
        definition=definition,
        score=row["score"] or 0.0,
    )


def _stored_reference(row: Mapping[str, Any]) -> StoredReference:
    span = Span(row["line"], row["col"], row["line"], row["end_col"])
    reference = Reference(row["name"], row["kind"], span, row["scope"])
    return StoredReference(row["file_id"], row["repo"], row["path"], reference)
