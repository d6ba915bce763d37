"""The CodeGraph database's schema and its recovery: creating the tables of
docs/codegraph-schema.md, opening a file with its version checked, and the SQLite result codes
that say a file is corrupt, unwritable or busy (what `store` does about each)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Literal

from sqlite_utils import Database

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""2: the FTS tables are written per file by the store, no longer by per-row triggers."""
LOCK_TIMEOUT_S = 0.5
"""Busy timeout per attempt: a second editor on the same workspace writes in short transactions."""

# SQLite primary result codes (exc.sqlite_errorcode & 0xFF).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 14, 26
CORRUPTION = {_CORRUPT, _NOTADB}
UNWRITABLE = {_READONLY, _IOERR, _CANTOPEN}
CONTENTION = {_BUSY, _LOCKED}
FTS_COLUMNS = {
    "symbols": ("words", "qualified_name", "signature", "doc"),
    "windows": ("text",),
}
"""Each table's FTS5 index (`<table>_fts`), kept by one statement per file and table rather than
by row triggers: measured on the standard library, the triggers made FTS5 cost about seven times
as much for the same terms (more than tree-sitter's parsing)."""


State = Literal["opened", "created", "rebuilt", "memory"]


def connect_checked(path: Path, lock_timeout: float) -> tuple[Database, State, str]:
    """Connect, check the schema version (dropping the file on a mismatch) and make sure we can
    write; returns the database, its OpenStatus state and reason."""
    existed = path.exists() and path.stat().st_size > 0
    db = file_db(path, lock_timeout)
    try:
        version = _schema_version(db)
        if existed and version == SCHEMA_VERSION:
            _probe_write(db)
            return db, "opened", ""
        if existed and (version is not None or db.table_names()):
            db.close()
            unlink_db(path)
            db = file_db(path, lock_timeout)
            create_schema(db)
            reason = f"schema version {version} != {SCHEMA_VERSION}, rebuilt"
            log.warning("codegraph: %s: %s", path, reason)
            return db, "rebuilt", reason
        create_schema(db)
        return db, "created", ""
    except BaseException:
        db.close()
        raise


def file_db(path: Path, lock_timeout: float) -> Database:
    # check_same_thread=False: the indexer writes from a worker thread; GraphStore's lock
    # serialises every use of the connection.
    conn = sqlite3.connect(str(path), timeout=lock_timeout, check_same_thread=False)
    db = Database(conn, execute_plugins=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # The refs indexes take random inserts: with the default 2 MB page cache, indexing the
        # standard library spent more time in SQLite than in tree-sitter.
        db.execute("PRAGMA cache_size=-65536")
    except BaseException:
        conn.close()
        raise
    return db


def memory_db() -> Database:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    db = Database(conn, execute_plugins=False)
    create_schema(db)
    return db


def _schema_version(db: Database) -> int | None:
    if "meta" not in db.table_names():
        return None
    rows = list(db.query("SELECT value FROM meta WHERE key = 'schema_version'"))
    try:
        return int(rows[0]["value"]) if rows else None
    except ValueError:
        return None


def _probe_write(db: Database) -> None:
    # Takes the write lock now, so a locked or read-only database is found at open time
    # rather than at the first indexed file.
    db.execute("BEGIN IMMEDIATE")
    db.execute("COMMIT")


def error_code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    message = str(exc).lower()
    if "not a database" in message:
        return _NOTADB
    if "malformed" in message:
        return _CORRUPT
    if "locked" in message:
        return _BUSY
    if "readonly" in message or "unable to open" in message:
        return _READONLY
    return 0


def _db_files(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


def move_aside(path: Path) -> Path:
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    for source in _db_files(path):
        if source.exists():
            os.replace(source, Path(str(target) + source.name[len(path.name) :]))
    return target


def unlink_db(path: Path) -> None:
    for source in _db_files(path):
        source.unlink(missing_ok=True)


def create_schema(db: Database) -> None:
    """The tables of docs/codegraph-schema.md (version SCHEMA_VERSION)."""
    db.table("meta").create({"key": str, "value": str}, pk="key", not_null={"value"})
    db.table("files").create(
        {
            "id": int,
            "repo": str,
            "path": str,
            "language": str,
            "sha256": str,
            "mtime": float,
            "size": int,
            "indexed_at": float,
            "has_errors": int,
        },
        pk="id",
        not_null={"repo", "path", "language", "sha256", "mtime", "size", "indexed_at"},
        defaults={"has_errors": 0},
    )
    db.table("files").create_index(["repo", "path"], unique=True)
    db.table("symbols").create(
        {
            "id": int,
            "file_id": int,
            "name": str,
            "qualified_name": str,
            "kind": str,
            "signature": str,
            "doc": str,
            "scope": str,
            "start_line": int,
            "start_col": int,
            "end_line": int,
            "end_col": int,
            "name_line": int,
            "name_col": int,
            "name_end_col": int,
            "words": str,
        },
        pk="id",
        foreign_keys=[("file_id", "files", "id")],
    )
    db.table("symbols").create_index(["name"])
    db.table("symbols").create_index(["qualified_name"])
    db.table("symbols").create_index(["file_id"])
    db.table("refs").create(
        {
            "id": int,
            "file_id": int,
            "name": str,
            "kind": str,
            "scope": str,
            "line": int,
            "col": int,
            "end_col": int,
        },
        pk="id",
        foreign_keys=[("file_id", "files", "id")],
    )
    db.table("refs").create_index(["name"])
    db.table("refs").create_index(["file_id", "name"])
    db.table("imports").create(
        {
            "id": int,
            "file_id": int,
            "module": str,
            "names": str,
            "alias": str,
            "line": int,
            "resolved_file_id": int,
        },
        pk="id",
        foreign_keys=[("file_id", "files", "id")],
    )
    db.table("imports").create_index(["file_id"])
    db.table("imports").create_index(["resolved_file_id"])
    db.table("edges").create(
        {
            "id": int,
            "src_kind": str,
            "src_id": int,
            "dst_kind": str,
            "dst_id": int,
            "type": str,
            "weight": float,
        },
        pk="id",
    )
    db.table("edges").create_index(["src_kind", "src_id"])
    db.table("edges").create_index(["dst_kind", "dst_id"])
    db.table("windows").create(
        {"id": int, "file_id": int, "start_line": int, "end_line": int, "text": str},
        pk="id",
        foreign_keys=[("file_id", "files", "id")],
    )
    db.table("windows").create_index(["file_id"])
    # External-content FTS5 tables, written by _insert_contents and _delete_contents.
    for table, columns in FTS_COLUMNS.items():
        db.table(table).enable_fts(list(columns))
    db.execute("CREATE VIRTUAL TABLE windows_vocab USING fts5vocab(windows_fts, 'row')")
    db.table("meta").insert_all(
        [
            {"key": "schema_version", "value": str(SCHEMA_VERSION)},
            {"key": "created_at", "value": str(time.time())},
            {"key": "edges_dirty", "value": "0"},
        ]
    )
