"""SIGTERM (what systemd, Docker and Kubernetes send) stops a shared node and a stdio server
cleanly in the middle of a burst of requests: exit status 0, an audit row for every request that
was answered and none for one that was not, a chain that verifies, and no process of the server's
left behind. Servers are stopped with SIGTERM only: a child of a background shell ignores SIGINT.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_node import Client, frame, initialize, listening_port, notify

ANSWERED_BEFORE_SIGNAL = 10
METHOD = "textDocument/completion"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    audit_db = tmp_path / "audit.sqlite3"
    path.write_text(f'[defaults]\nrole = "member"\n\n[audit]\ndb = "{audit_db}"\n')
    return path


def environment(policy: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CODEAGENT_POLICY": str(policy), "XDG_CACHE_HOME": str(tmp_path)}


async def open_document(client: Client, tiny_model: Path, workspace: Path) -> str:
    workspace.mkdir()
    await initialize(client, "", tiny_model, workspace, completion={"maxTokens": 8})
    uri = (workspace / "burst.py").as_uri()
    text = "def area(width, height):\n    return "
    document = {"uri": uri, "languageId": "python", "version": 1, "text": text}
    notify(client, "textDocument/didOpen", {"textDocument": document})
    return uri


async def burst_until_stopped(client: Client, uri: str, pid: int) -> tuple[int, dict[int, Any]]:
    """Completions sent without waiting for answers, SIGTERM once some are answered, sending on
    until the server closes the stream; (requests sent, answers by id)."""
    answers: dict[int, dict[str, Any]] = {}
    sent = 0
    signalled, closed = asyncio.Event(), asyncio.Event()
    params = {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}}

    async def send() -> None:
        nonlocal sent
        for msg_id in itertools.count(1000):
            if closed.is_set():
                return
            message = {"jsonrpc": "2.0", "id": msg_id, "method": METHOD, "params": params}
            try:
                client.writer.write(frame(message))
                await client.writer.drain()
            except ConnectionError:  # BrokenPipeError included: the server is gone
                return
            sent += 1
            await asyncio.sleep(0.002)

    async def receive() -> None:
        while True:
            try:
                message = await client.read()
            except (EOFError, asyncio.IncompleteReadError, ConnectionError):
                closed.set()
                return
            if message.get("id", 0) >= 1000 and "method" not in message:
                assert message["id"] not in answers, f"answered twice: {message}"
                answers[message["id"]] = message
                if len(answers) == ANSWERED_BEFORE_SIGNAL:
                    os.kill(pid, signal.SIGTERM)
                    signalled.set()

    await asyncio.gather(send(), receive())
    assert signalled.is_set(), f"only {len(answers)} answers before the server closed"
    return sent, answers


def children(pid: int) -> set[int]:
    """Processes the server started (every thread's children: a worker may start from any)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def assert_stopped_cleanly(
    code: int, sent: int, answers: dict[int, Any], policy: Path, spawned: set[int]
) -> None:
    assert code == 0
    codes = {a.get("error", {}).get("code") for a in answers.values()}
    assert codes <= {None, -32802, -32800}, codes  # answered, busy, or cancelled at the deadline
    assert len(answers) < sent  # the burst went on past the signal: the last ones were not read
    with sqlite3.connect(policy.parent / "audit.sqlite3") as db:
        rows = db.execute("SELECT count(*) FROM audit WHERE feature = 'completion'").fetchone()[0]
    assert rows == len(answers)
    verify = subprocess.run(
        [sys.executable, "-m", "codeagent_lsp", "audit", "verify"],
        env={**os.environ, "CODEAGENT_POLICY": str(policy)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    alive = {pid for pid in spawned if Path(f"/proc/{pid}").exists()}
    assert not alive, f"processes of the server outlived it: {alive}"


async def test_sigterm_stops_a_node_under_a_burst_without_losing_a_row(
    tiny_model: Path, tmp_path: Path, policy: Path
) -> None:
    log = tmp_path / "node.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "codeagent_lsp", "--tcp", "127.0.0.1:0", "--log-file", str(log),
         "--rate", "0", "--max-pending", "8"],
        env=environment(policy, tmp_path), cwd=tmp_path,
    )  # fmt: skip
    try:
        port = await listening_port(process, log)
        client = Client(*await asyncio.open_connection("127.0.0.1", port))
        uri = await open_document(client, tiny_model, tmp_path / "project")
        spawned = children(process.pid)
        sent, answers = await burst_until_stopped(client, uri, process.pid)
        code = await asyncio.to_thread(process.wait, 60)
    finally:
        if process.poll() is None:
            process.kill()
    assert_stopped_cleanly(code, sent, answers, policy, spawned)
    assert "SIGTERM: stopping" in log.read_text()


async def test_sigterm_stops_a_stdio_server_mid_session_without_losing_a_row(
    tiny_model: Path, tmp_path: Path, policy: Path
) -> None:
    log = tmp_path / "server.log"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codeagent_lsp", "--max-pending", "8", "--log-file", str(log),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env=environment(policy, tmp_path), cwd=tmp_path,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdin is not None
        client = Client(process.stdout, process.stdin)
        uri = await open_document(client, tiny_model, tmp_path / "project")
        spawned = children(process.pid)
        sent, answers = await burst_until_stopped(client, uri, process.pid)
        code = await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
    assert_stopped_cleanly(code, sent, answers, policy, spawned)
    assert "SIGTERM: stopping" in log.read_text()
