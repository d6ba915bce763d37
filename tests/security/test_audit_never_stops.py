"""The audit never stops silently: any text is stored, the writer survives any row, a file that
cannot be written makes the server refuse requests with the reason (fail closed) unless the
policy chose best effort, and a deleted or replaced file starts a new chain whose first row
names the gap. Real SQLite files, and a real server over stdio."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codeagent_lsp.security import audit
from codeagent_lsp.security.identity import Identity
from tests.e2e.test_node import Client, frame

ALICE = Identity("alice", ("dev",), "stdio")
ODD_TEXTS = ("explain\ud800", "\udfff tail", "nul\0inside", "é\ud83d", "\\ud800 literal")


def rows(db: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT feature, decision, reason FROM audit ORDER BY id"
        ).fetchall()


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_any_text_is_audited_and_the_writer_goes_on(tmp_path: Path, text: str) -> None:
    log = audit.AuditLog(tmp_path / "audit.sqlite3", store_prompts=True)
    odd = audit.new_row(ALICE, text, text, text)
    odd.prompt, odd.reason = text, text
    log.record(odd)
    log.record(audit.new_row(ALICE, "hover", "repo", "a.py"))
    log.flush()
    assert not log.failure and log.refusal() is None
    log.close()
    written = rows(tmp_path / "audit.sqlite3")
    assert [r[0] for r in written][1:] == ["hover"] and len(written) == 2
    assert audit.verify(tmp_path / "audit.sqlite3").ok


@pytest.mark.parametrize("what", ["deleted", "replaced"])
def test_a_deleted_or_replaced_file_starts_a_new_chain_naming_the_gap(
    tmp_path: Path, what: str
) -> None:
    path = tmp_path / "audit.sqlite3"
    log = audit.AuditLog(path)
    log.record(audit.new_row(ALICE, "hover", "repo", "a.py"))
    log.flush()
    path.unlink()
    if what == "replaced":
        with sqlite3.connect(path) as forged:
            forged.execute("CREATE TABLE audit (id INTEGER)")
    log.record(audit.new_row(ALICE, "completion", "repo", "b.py"))
    log.close()
    written = rows(path)
    assert [(f, d) for f, d, _ in written] == [("audit", "gap"), ("completion", "allow")]
    assert f"the audit file was {what} while the server ran" in (written[0][2] or "")
    assert "row 1, hash" in (written[0][2] or "")
    assert audit.verify(path).ok
    assert (what == "replaced") == any(tmp_path.glob("audit.sqlite3.replaced-*"))


# --- over stdio -----------------------------------------------------------------------------


async def start(tmp_path: Path, policy: str, limit_bytes: int | None = None, mode: int = 0o644):
    """A stdio server under `policy` (a file size cap stands for a full disk), the policy file
    with permissions `mode`."""
    (tmp_path / "policy.toml").write_text(policy.format(db=tmp_path / "audit.sqlite3"))
    (tmp_path / "policy.toml").chmod(mode)
    env = {"CODEAGENT_POLICY": str(tmp_path / "policy.toml"), "XDG_CACHE_HOME": str(tmp_path)}

    def cap() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codeagent_lsp", "--log-file", str(tmp_path / "server.log"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **env},
        cwd=tmp_path, preexec_fn=cap,
    )  # fmt: skip
    assert process.stdout is not None and process.stdin is not None
    client = Client(process.stdout, process.stdin)  # type: ignore[arg-type]
    params = {"processId": None, "capabilities": {}, "rootUri": tmp_path.as_uri(),
              "initializationOptions": {"model": str(tmp_path / "none.gguf")}}  # fmt: skip
    assert "result" in await client.request("initialize", params)
    client.writer.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
    return process, client


async def stats(client: Client) -> dict[str, Any]:
    return await client.request("codeagent/stats")


async def stop(process, client: Client) -> None:
    answer = await asyncio.wait_for(client.request("shutdown"), 30)
    assert "result" in answer, answer
    client.writer.write(frame({"jsonrpc": "2.0", "method": "exit"}))
    await asyncio.wait_for(process.wait(), 30)


POLICY = '[defaults]\nrole = "member"\n\n[audit]\ndb = "{db}"\n'


async def test_a_lone_surrogate_in_an_action_is_audited_and_serving_goes_on(
    tmp_path: Path,
) -> None:
    """Also an action's name of 10 MB (NUL bytes inside): its row holds a bounded part of it,
    so no client can fill the disk, and with it refuse everyone's requests, by naming."""
    process, client = await start(tmp_path, POLICY)
    for msg_id, action in ((77, "explain\\ud800"), (78, "x\\u0000" + "y" * 10_000_000)):
        data = '{"action":"' + action + '","uri":"file:///nowhere.py"}'
        resolve = '{"jsonrpc":"2.0","id":' + str(msg_id) + ',"method":"codeAction/resolve",'
        resolve += '"params":{"title":"x","data":' + data + "}}"
        client.writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(resolve), resolve.encode()))
        assert "error" in await client.answer(msg_id)
    assert "result" in await stats(client)
    await stop(process, client)
    written = rows(tmp_path / "audit.sqlite3")
    features = [f for f, _, _ in written]
    assert features[0].startswith("explain") and "stats" in features[1:], features
    (huge,) = [f for f in features if f.startswith("x\\x00yyy")]
    assert "10,000,002 characters" in huge
    assert max(len(f) + len(r or "") for f, _, r in written) < 3 * audit.MAX_TEXT
    assert audit.verify(tmp_path / "audit.sqlite3").ok


async def test_a_deleted_audit_file_is_noticed_and_a_new_chain_begins(tmp_path: Path) -> None:
    process, client = await start(tmp_path, POLICY)
    assert "result" in await stats(client)
    while not rows(tmp_path / "audit.sqlite3"):  # the writer thread writes after the answer
        await asyncio.sleep(0.05)
    (tmp_path / "audit.sqlite3").unlink()
    assert "result" in await stats(client)
    await stop(process, client)
    written = rows(tmp_path / "audit.sqlite3")
    assert written[0][:2] == ("audit", "gap") and "deleted" in (written[0][2] or ""), written
    assert ("stats", "allow") in [r[:2] for r in written[1:]]
    assert audit.verify(tmp_path / "audit.sqlite3").ok


@pytest.mark.parametrize("on_failure", ["refuse", "continue"])
async def test_a_full_disk_refuses_requests_unless_the_policy_says_best_effort(
    tmp_path: Path, on_failure: str
) -> None:
    policy = POLICY + f'on_failure = "{on_failure}"\n'
    process, client = await start(tmp_path, policy, limit_bytes=200_000)
    answers = []
    for _ in range(2000):  # rows grow the file until the cap refuses a write
        answers.append(await stats(client))
        if "error" in answers[-1]:
            break
    await stop(process, client)
    log = (tmp_path / "server.log").read_text()
    assert "audit: rows cannot be written" in log
    if on_failure == "refuse":
        error = answers[-1]["error"]["message"]
        assert "the audit log cannot be written" in error and "requests are refused" in error
    else:
        assert all("result" in a for a in answers), [a for a in answers if "error" in a][:1]
    assert json.dumps(answers[0])  # answered at all
