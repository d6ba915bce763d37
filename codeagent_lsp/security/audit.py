"""The tamper-evident audit log: one SQLite row per request, append-only, hash-chained.

Each row's `hash` is sha256(previous row's hash + the row's canonical JSON, id included), so
changing a row breaks its own hash, deleting one breaks the next row's link, and an inserted or
renumbered row breaks the chain where it lands. Triggers refuse UPDATE and DELETE; AUTOINCREMENT
keeps the highest id ever used in sqlite_sequence, so cutting rows off the end shows too unless
that table is forged as well. Someone who can rewrite the whole file can recompute the chain:
ship `audit export` (which carries every hash) to the SIEM to anchor it outside the machine.

Writes go through a queue to one background thread that inserts in batches (a completion never
waits on the disk); `flush()` and `close()` wait until every queued row is written. Each batch
reads the chain's head inside BEGIN IMMEDIATE, so several processes (the server and a headless
command) can append to one file without forking the chain.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from codeagent_lsp.security.identity import Identity

log = logging.getLogger(__name__)

GENESIS = "0" * 64
BATCH = 256


@dataclass
class Row:
    """What is known of one request; the server fills it as the request runs."""

    feature: str
    user: str = ""
    groups: str = ""
    transport: str = ""
    token_name: str | None = None
    repository: str | None = None
    path_sha256: str | None = None
    model_sha256: str | None = None
    prompt_sha256: str | None = None
    prompt_tokens: int | None = None
    response_sha256: str | None = None
    response_tokens: int | None = None
    decision: str = "allow"
    """allow, deny, or error (allowed, but failed)."""
    reason: str | None = None
    latency_ms: float | None = None
    prompt: str | None = None
    """Only when the policy stores prompts."""
    response: str | None = None
    """Only when the policy stores code."""
    time: str = ""


COLUMNS = tuple(f.name for f in fields(Row))

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(COLUMNS)},
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
"""

current: contextvars.ContextVar[Row | None] = contextvars.ContextVar("audit_row", default=None)
"""The row of the request being served: the prompt and response are noted on it from deep in
the pipeline without passing it through every call."""


def new_row(identity: Identity, feature: str, repository: str | None, path: str | None) -> Row:
    """A row for a request by `identity`; the file's path is kept only as a hash."""
    where = f"{repository or ''}/{path}" if path is not None else None
    return Row(
        feature=feature,
        user=identity.user,
        groups=",".join(identity.groups),
        transport=identity.transport,
        token_name=identity.token_name,
        repository=repository,
        path_sha256=sha256_text(where) if where is not None else None,
    )


@contextlib.contextmanager
def recording(log: AuditLog, row: Row) -> Iterator[Row]:
    """Times an allowed request, makes `row` the one the pipeline notes its prompt on, and
    writes it when the request ends, however it ends."""
    token = current.set(row)
    start = time.perf_counter()
    try:
        yield row
    except BaseException as exc:
        row.decision, row.reason = "error", type(exc).__name__
        raise
    finally:
        current.reset(token)
        row.latency_ms = (time.perf_counter() - start) * 1000
        log.record(row)


def deny(log: AuditLog, row: Row, reason: str) -> None:
    row.decision, row.reason, row.latency_ms = "deny", reason, 0.0
    log.record(row)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def note_prompt(text: str, model_sha256: str | None) -> None:
    """Called where a prompt goes to the model: its hash, and its text should the policy keep
    prompts (the log drops it otherwise when it writes the row)."""
    row = current.get()
    if row is not None:
        row.prompt_sha256, row.prompt, row.model_sha256 = sha256_text(text), text, model_sha256


def note_response(text: str, prompt_tokens: int, response_tokens: int) -> None:
    row = current.get()
    if row is not None:
        row.response_sha256, row.response = sha256_text(text), text
        row.prompt_tokens, row.response_tokens = prompt_tokens, response_tokens


def canonical(row_id: int, values: dict[str, object]) -> str:
    return json.dumps(
        {"id": row_id, **values}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def chain_hash(prev_hash: str, row_id: int, values: dict[str, object]) -> str:
    return hashlib.sha256((prev_hash + canonical(row_id, values)).encode()).hexdigest()


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    path.chmod(0o600)  # rows name users and hash their files: for the owner (root on a node)
    return db


class AuditLog:
    """The writer of one audit file.

    It never stops: any text is stored (what UTF-8 cannot hold is escaped), and a batch that
    fails is kept and tried again with the next one. While rows cannot be written (a full
    disk, a read-only file or folder), `refusal()` says why, and the server refuses requests
    with that reason unless the policy chose best effort (`fail_closed=False`). A file deleted
    or replaced under the running server is noticed before the next batch: a replacement is
    moved aside, and a new file starts a new chain whose first row names the gap.
    """

    def __init__(
        self,
        path: Path,
        *,
        store_prompts: bool = False,
        store_code: bool = False,
        fail_closed: bool = True,
    ):
        self.path = path
        self.store_prompts, self.store_code = store_prompts, store_code
        self.fail_closed = fail_closed
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        """(device, inode) of the file this writer appends to."""
        self._head: tuple[int, str] | None = None
        """(id, hash) of the file's last row, to name a gap."""
        self._unwritten: list[Row] = []
        self.failure: str = ""
        """Why rows cannot be written now; empty while they can."""
        self._queue: queue.Queue[Row | None] = queue.Queue()
        self._open()
        self._writer = threading.Thread(target=self._write_loop, name="audit", daemon=True)
        self._writer.start()
        atexit.register(self.close)  # rows queued by the last requests are written, not lost

    def record(self, row: Row) -> None:
        """Queue a row (never blocks on the disk). Prompt and response text are dropped here
        unless the policy stores them."""
        row.time = row.time or datetime.now(UTC).isoformat(timespec="microseconds")
        row.prompt = row.prompt if self.store_prompts else None
        row.response = row.response if self.store_code else None
        if row.latency_ms is not None:
            row.latency_ms = round(row.latency_ms, 3)
        self._queue.put(row)

    def refusal(self) -> str | None:
        """Why requests must be refused now (rows cannot be written and the policy fails
        closed), else None."""
        if self.failure and self.fail_closed:
            return f"the audit log cannot be written ({self.failure}); requests are refused"
        return None

    def flush(self) -> None:
        """Wait until every row queued so far is handled (written, or kept to try again)."""
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks and self._writer.is_alive():
                done.wait(0.5)

    def close(self) -> None:
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _write_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            rows = [r for r in batch if r is not None]
            try:
                self._write(rows)
            except Exception:  # the writer outlives any row: it must never stop
                log.exception("audit: unexpected failure writing %d rows", len(rows))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if len(rows) < len(batch):
                return

    def _write(self, rows: list[Row]) -> None:
        """Append the rows kept from failed batches, then `rows`; keep them all on failure."""
        pending = self._unwritten + rows
        if not pending:
            return
        try:
            self._follow_the_file()
            self._append(pending)
        except (sqlite3.Error, OSError) as exc:
            self._unwritten = pending[-MAX_UNWRITTEN:]
            if not self.failure:
                log.error("audit: rows cannot be written to %s: %s", self.path, exc)
            self.failure = f"{type(exc).__name__}: {exc}"
            return
        if self.failure:
            log.warning("audit: writing to %s again (%d rows kept)", self.path, len(pending))
        self._unwritten, self.failure = [], ""

    def _open(self) -> None:
        try:
            self._db = connect(self.path)
            stat = self.path.stat()
            self._file = (stat.st_dev, stat.st_ino)
            self._head = self._db.execute(
                "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1"
            ).fetchone()
        except (sqlite3.Error, OSError) as exc:
            self._db = None
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("audit: cannot open %s: %s", self.path, exc)

    def _follow_the_file(self) -> None:
        """Reopen when the file is not the one opened (deleted, replaced) or none is open; a
        new chain then starts with a row naming the gap."""
        try:
            stat = self.path.stat()
            now: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            now = None
        if self._db is not None and now == self._file:
            return
        gap = None
        if self._db is not None:
            self._db.close()
            self._db = None
            gap = "deleted" if now is None else "replaced"
            self._set_aside(replaced=now is not None)
        head = self._head
        self._open()
        if self._db is None:
            raise sqlite3.OperationalError(self.failure)
        if gap is not None:
            self._append([self._gap_row(gap, head)])

    def _set_aside(self, *, replaced: bool) -> None:
        """A replacement (with its -wal and -shm) is kept under another name for whoever
        investigates, never written to; after a deletion the old file's -wal and -shm are
        removed (SQLite keeps them when the file is gone), or the new file would read them."""
        aside = f"{self.path.name}.replaced-{time.time():.0f}"
        for suffix in ("", "-wal", "-shm"):
            name = self.path.with_name(self.path.name + suffix)
            if replaced:
                with contextlib.suppress(FileNotFoundError):
                    name.rename(self.path.with_name(aside + suffix))
            elif suffix:
                name.unlink(missing_ok=True)

    @staticmethod
    def _gap_row(what: str, head: tuple[int, str] | None) -> Row:
        last = f"row {head[0]}, hash {head[1]}" if head else "no row"
        return Row(
            feature="audit",
            decision="gap",
            reason=f"the audit file was {what} while the server ran; a new chain starts here. "
            f"The previous chain ended at {last} as far as this process knows",
            time=datetime.now(UTC).isoformat(timespec="microseconds"),
        )

    def _append(self, rows: list[Row]) -> None:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
            row_id = max(last[0] if last else 0, seq[0] if seq else 0)
            prev = last[1] if last else GENESIS
            for row in rows:
                row_id += 1
                values = storable(asdict(row))
                digest = chain_hash(prev, row_id, values)
                db.execute(
                    f"INSERT INTO audit (id, {', '.join(COLUMNS)}, prev_hash, hash) "
                    f"VALUES ({', '.join('?' * (len(COLUMNS) + 3))})",
                    (row_id, *values.values(), prev, digest),
                )
                prev = digest
            db.execute("COMMIT")
            self._head = (row_id, prev)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise


MAX_UNWRITTEN = 100_000
"""Rows kept while the file cannot be written; beyond, the oldest are dropped (and the server
refuses requests meanwhile unless the policy chose best effort)."""


MAX_TEXT = 1000
"""Characters kept of any text but prompt and response: a client names the feature (an
action's name), a folder and what a reason quotes, and one request of 16 MiB must not write
16 MiB to the log (a full disk refuses everyone's requests). Prompts and responses are bounded
by the model's context."""
WHOLE = frozenset({"prompt", "response"})


def storable(values: dict[str, object]) -> dict[str, object]:
    """Row values that SQLite and UTF-8 JSON can hold: lone surrogates (which UTF-8 cannot
    encode) and NUL (which ends text in SQLite's C API) escaped as `\\udXXXX` / `\\x00`, and
    texts over MAX_TEXT characters cut there (their length and sha256 kept)."""
    return {
        k: _storable_text(v if k in WHOLE else _clipped(v)) if isinstance(v, str) else v
        for k, v in values.items()
    }


def _clipped(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]}... ({len(text):,} characters, sha256 {sha256_text(text)})"


def _storable_text(text: str) -> str:
    if text.isascii() and "\0" not in text:
        return text
    escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return escaped.replace("\0", "\\x00")


# --- verify and export --------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    head: str
    """The last row's hash: note it elsewhere to anchor the chain."""
    bad_id: int | None = None
    problem: str = ""


def verify(path: Path) -> Verdict:
    """Walk the chain from the first row; the first row whose id, link or hash is wrong is
    named. Opened read-only: verifying never changes the file."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        prev, expected_id, count = GENESIS, 1, 0
        for row_id, values, prev_hash, digest in _rows(db, "SELECT * FROM audit ORDER BY id"):
            problem = _row_problem(row_id, expected_id, values, prev, prev_hash, digest)
            if problem:
                return Verdict(False, count, prev, row_id, problem)
            prev, expected_id, count = digest, row_id + 1, count + 1
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        if seq and seq[0] > expected_id - 1:
            return Verdict(
                False,
                count,
                prev,
                expected_id,
                f"rows {expected_id}..{seq[0]} were removed from the end",
            )
        return Verdict(True, count, prev)
    finally:
        db.close()


def _row_problem(
    row_id: int,
    expected_id: int,
    values: dict[str, object],
    prev: str,
    prev_hash: str,
    digest: str,
) -> str:
    if row_id != expected_id:
        return f"expected row {expected_id} next, found row {row_id}: rows deleted"
    if prev_hash != prev:
        return "its link to the previous row is broken: a row before it was changed or removed"
    if chain_hash(prev, row_id, values) != digest:
        return "its content does not match its hash: the row was changed or inserted"
    return ""


def _rows(
    db: sqlite3.Connection, query: str, args: tuple[object, ...] = ()
) -> Iterator[tuple[int, dict[str, object], str, str]]:
    cursor = db.execute(query, args)
    names = [d[0] for d in cursor.description]
    for record in cursor:
        data = dict(zip(names, record, strict=True))
        values = {c: data[c] for c in COLUMNS}
        yield data["id"], values, data["prev_hash"], data["hash"]


def export(path: Path, since: datetime, out: IO[str]) -> int:
    """Rows at or after `since` as JSON lines (with their hashes) for a SIEM; returns the count."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    count = 0
    try:
        start = since.astimezone(UTC).isoformat(timespec="microseconds")
        query = "SELECT * FROM audit WHERE time >= ? ORDER BY id"
        for row_id, values, prev_hash, digest in _rows(db, query, (start,)):
            record = {"id": row_id, **values, "prev_hash": prev_hash, "hash": digest}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    finally:
        db.close()
    return count
