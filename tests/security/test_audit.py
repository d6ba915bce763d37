"""The audit log: append-only, hash-chained, verifiable, exportable; real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from codeagent_lsp.security import audit
from codeagent_lsp.security.identity import Identity

ALICE = Identity("alice", ("dev", "staff"), "stdio")


def _write(db: Path, count: int, **kwargs: bool) -> None:
    log = audit.AuditLog(db, **kwargs)
    for i in range(count):
        row = audit.new_row(ALICE, "completion", "repo", f"src/file{i}.py")
        row.prompt, row.response, row.latency_ms = f"prompt {i}", f"answer {i}", 1.5 + i
        log.record(row)
    log.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.sqlite3"
    _write(path, 5)
    return path


def _raw(db: Path) -> sqlite3.Connection:
    """A connection of someone tampering with the file: triggers dropped first."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("DROP TRIGGER audit_no_delete")
    return con


def test_an_untouched_log_verifies(db: Path) -> None:
    verdict = audit.verify(db)
    assert verdict.ok and verdict.rows == 5 and len(verdict.head) == 64


def test_rows_hold_hashes_not_paths_or_text(db: Path) -> None:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT user, groups, path_sha256, prompt, response FROM audit").fetchall()
    assert rows[0][:2] == ("alice", "dev,staff")
    assert rows[0][2] == audit.sha256_text("repo/src/file0.py")
    assert all(prompt is None and response is None for *_, prompt, response in rows)


def test_text_is_kept_only_when_the_policy_says_so(tmp_path: Path) -> None:
    path = tmp_path / "kept.sqlite3"
    _write(path, 1, store_prompts=True, store_code=False)
    prompt, response = (
        sqlite3.connect(path).execute("SELECT prompt, response FROM audit").fetchone()
    )
    assert (prompt, response) == ("prompt 0", None)


@pytest.mark.parametrize("statement", ["UPDATE audit SET user = 'mallory'", "DELETE FROM audit"])
def test_triggers_refuse_update_and_delete(db: Path, statement: str) -> None:
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        sqlite3.connect(db).execute(statement)


def test_a_changed_row_is_found(db: Path) -> None:
    _raw(db).execute("UPDATE audit SET decision = 'deny' WHERE id = 3")
    verdict = audit.verify(db)
    assert not verdict.ok and verdict.bad_id == 3 and "content" in verdict.problem


def test_a_changed_row_with_its_hash_recomputed_breaks_the_next_link(db: Path) -> None:
    con = _raw(db)
    (prev,) = con.execute("SELECT prev_hash FROM audit WHERE id = 2").fetchone()
    values = dict(next(audit._rows(con, "SELECT * FROM audit WHERE id = 2"))[1])
    values["user"] = "mallory"
    forged = audit.chain_hash(prev, 2, values)
    con.execute("UPDATE audit SET user = 'mallory', hash = ? WHERE id = 2", (forged,))
    verdict = audit.verify(db)
    assert not verdict.ok and verdict.bad_id == 3 and "link" in verdict.problem


def test_a_deleted_row_is_found(db: Path) -> None:
    _raw(db).execute("DELETE FROM audit WHERE id = 2")
    verdict = audit.verify(db)
    assert not verdict.ok and verdict.bad_id == 3


def test_rows_cut_off_the_end_are_found(db: Path) -> None:
    _raw(db).execute("DELETE FROM audit WHERE id >= 4")
    verdict = audit.verify(db)
    assert not verdict.ok and verdict.bad_id == 4 and "end" in verdict.problem


def test_an_inserted_row_is_found(db: Path) -> None:
    con = sqlite3.connect(db, isolation_level=None)
    (head,) = con.execute("SELECT hash FROM audit WHERE id = 5").fetchone()
    columns = ", ".join(audit.COLUMNS)
    marks = ", ".join("?" * len(audit.COLUMNS))
    values = [None] * len(audit.COLUMNS)
    values[audit.COLUMNS.index("feature")] = "completion"
    con.execute(
        f"INSERT INTO audit (id, {columns}, prev_hash, hash) VALUES (6, {marks}, ?, ?)",
        (*values, head, "f" * 64),
    )
    verdict = audit.verify(db)
    assert not verdict.ok and verdict.bad_id == 6


def test_two_writers_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    first, second = audit.AuditLog(path), audit.AuditLog(path)
    for i in range(40):
        (first if i % 2 else second).record(audit.new_row(ALICE, "hover", "repo", f"f{i}"))
        if i % 7 == 0:
            first.flush()
            second.flush()
    first.close()
    second.close()
    verdict = audit.verify(path)
    assert verdict.ok and verdict.rows == 40


def test_export_writes_json_lines_since_a_time(db: Path, tmp_path: Path) -> None:
    later = tmp_path / "later.txt"
    with later.open("w") as out:
        assert audit.export(db, datetime.now(UTC) + timedelta(hours=1), out) == 0
    with (tmp_path / "all.jsonl").open("w") as out:
        assert audit.export(db, datetime.now(UTC) - timedelta(hours=1), out) == 5
    lines = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [1, 2, 3, 4, 5]
    assert {"hash", "prev_hash", "user", "feature", "decision", "latency_ms"} <= set(lines[0])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeagent_lsp", "audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_verify_and_export(db: Path) -> None:
    good = _cli("verify", "--db", str(db))
    assert good.returncode == 0 and "5 rows" in good.stdout
    exported = _cli("export", "--since", "2000-01-01", "--db", str(db))
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 5
    _raw(db).execute("UPDATE audit SET feature = 'hover' WHERE id = 4")
    bad = _cli("verify", "--db", str(db))
    assert bad.returncode == 1 and "row 4" in bad.stderr


def test_cli_rejects_a_bad_time(db: Path) -> None:
    result = _cli("export", "--since", "yesterday", "--db", str(db))
    assert result.returncode == 2 and "ISO 8601" in result.stderr
