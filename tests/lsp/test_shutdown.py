"""SIGTERM (what systemd, Docker and Kubernetes send) stops a shared node and a stdio server
cleanly in the middle of a burst of requests: exit status 0, an audit row for every request that
was answered and none for one that was not, a chain that verifies, and no process of the server's
left behind. Servers are stopped with SIGTERM only: a child of a background shell ignores SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_node import Client, frame, listening_port, node_settings

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


class Peer:
    """The client's end of a byte stream (stdio, TCP): framed messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.client = Client(reader, writer)

    async def send(self, message: dict[str, Any]) -> None:
        self.client.writer.write(frame(message))
        await self.client.writer.drain()

    async def read(self) -> dict[str, Any]:
        try:
            return await self.client.read()
        except asyncio.IncompleteReadError as exc:
            raise EOFError from exc


class WebSocketPeer(Peer):
    """The client's end of a WebSocket: one message per frame, no headers."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.websocket.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise ConnectionError from exc

    async def read(self) -> dict[str, Any]:
        try:
            return json.loads(await self.websocket.recv())
        except ConnectionClosed as exc:
            raise EOFError from exc


async def open_document(peer: Peer, tiny_model: Path, workspace: Path) -> str:
    workspace.mkdir()
    options = {"model": str(tiny_model), "engine": {"threads": 1}, "completion": {"maxTokens": 8}}
    params = {"processId": None, "capabilities": {}, "rootUri": workspace.as_uri(),
              "initializationOptions": options}  # fmt: skip
    await peer.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
    while (await peer.read()).get("id") != 1:
        pass
    await peer.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    uri = (workspace / "burst.py").as_uri()
    text = "def area(width, height):\n    return "
    document = {"uri": uri, "languageId": "python", "version": 1, "text": text}
    await peer.send(
        {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": document}}
    )
    await model_loaded(peer)
    return uri


async def model_loaded(peer: Peer) -> None:
    """Wait until codeagent/stats names the model: its engine's worker is running by then."""
    for msg_id in range(2, 602):
        await peer.send(
            {"jsonrpc": "2.0", "id": msg_id, "method": "codeagent/stats", "params": None}
        )
        while (answer := await peer.read()).get("id") != msg_id or "method" in answer:
            pass
        assert "result" in answer, answer
        if answer["result"]["model"] is not None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the model did not load: {answer}")


async def burst_until_stopped(
    peer: Peer, uri: str, pid: int
) -> tuple[int, dict[int, Any], set[int]]:
    """Completions sent without waiting for answers, SIGTERM once some are answered, sending on
    until the server closes the stream; (requests sent, answers by id, the server's child
    processes when it was signalled: the engine's worker)."""
    answers: dict[int, dict[str, Any]] = {}
    spawned: set[int] = set()
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
                await peer.send(message)
            except ConnectionError:  # BrokenPipeError included: the server is gone
                return
            sent += 1
            await asyncio.sleep(0.002)

    async def receive() -> None:
        while True:
            try:
                message = await peer.read()
            except (EOFError, ConnectionError):
                closed.set()
                return
            if message.get("id", 0) >= 1000 and "method" not in message:
                assert message["id"] not in answers, f"answered twice: {message}"
                answers[message["id"]] = message
                if len(answers) == ANSWERED_BEFORE_SIGNAL:
                    spawned.update(children(pid))
                    os.kill(pid, signal.SIGTERM)
                    signalled.set()

    await asyncio.gather(send(), receive())
    assert signalled.is_set(), f"only {len(answers)} answers before the server closed"
    return sent, answers, spawned


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
    assert spawned, "no engine worker was running when the server was signalled"
    alive = {pid for pid in spawned if Path(f"/proc/{pid}").exists()}
    assert not alive, f"processes of the server outlived it: {alive}"


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_sigterm_stops_a_node_under_a_burst_without_losing_a_row(
    transport: str, tiny_model: Path, tmp_path: Path, policy: Path
) -> None:
    log = tmp_path / "node.log"
    (tmp_path / "repos").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "codeagent_lsp", f"--{transport}", "127.0.0.1:0",
         "--log-file", str(log), "--rate", "0", "--max-pending", "8",
         *node_settings(tiny_model, tmp_path / "repos", "--set", "completion.maxTokens=8")],
        env=environment(policy, tmp_path), cwd=tmp_path,
    )  # fmt: skip
    try:
        port = await listening_port(process, log)
        async with connected(transport, port) as peer:
            uri = await open_document(peer, tiny_model, tmp_path / "repos" / "project")
            sent, answers, spawned = await burst_until_stopped(peer, uri, process.pid)
        code = await asyncio.to_thread(process.wait, 60)
    finally:
        if process.poll() is None:
            process.kill()
    assert_stopped_cleanly(code, sent, answers, policy, spawned)
    assert "SIGTERM: stopping" in log.read_text()


@contextlib.asynccontextmanager
async def connected(transport: str, port: int) -> AsyncIterator[Peer]:
    if transport == "ws":
        async with ws_connect(f"ws://127.0.0.1:{port}") as websocket:
            yield WebSocketPeer(websocket)
        return
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Peer(reader, writer)
    finally:
        writer.close()


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
        peer = Peer(process.stdout, process.stdin)
        uri = await open_document(peer, tiny_model, tmp_path / "project")
        sent, answers, spawned = await burst_until_stopped(peer, uri, process.pid)
        code = await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
    assert_stopped_cleanly(code, sent, answers, policy, spawned)
    assert "SIGTERM: stopping" in log.read_text()
