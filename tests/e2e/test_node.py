"""The shared node over loopback TCP with TLS and bearer tokens: a client without a valid token
is turned away, and a flood of 10,000 requests with a cancel storm from one client neither
starves another client nor grows the server's memory, and every request is in the audit log,
whose chain still verifies."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

FLOOD = int(os.environ.get("FLOOD", "10000"))
STATS = "codeagent/stats"


def frame(message: dict[str, Any], token: str | None = None) -> bytes:
    body = json.dumps(message).encode()
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    return auth + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ids = itertools.count(1)

    async def read(self) -> dict[str, Any]:
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if not length:
            raise EOFError("the server closed the connection")
        return json.loads(await self.reader.readexactly(length))

    async def answer(self, msg_id: int) -> dict[str, Any]:
        """Read until the response to msg_id (server notifications are skipped)."""
        while (message := await self.read()).get("id") != msg_id or "method" in message:
            pass
        return message

    async def request(self, method: str, params: Any = None, token: str | None = None):
        msg_id = next(self.ids)
        message = {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}
        self.writer.write(frame(message, token))
        return await self.answer(msg_id)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


TOKENS = {"flooder": "flood-token-0123456789", "calm": "calm-token-9876543210"}


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    lines = [f'[audit]\ndb = "{tmp_path / "audit.sqlite3"}"\n']
    for name, token in TOKENS.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        lines.append(f'[[token]]\nname = "{name}"\nsha256 = "{digest}"\nrole = "admin"\n')
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
async def node(
    tls_files: tuple[Path, Path], policy: Path, tmp_path: Path, tiny_model: Path
) -> AsyncIterator[tuple[subprocess.Popen, int]]:
    cert, key = tls_files
    env = {**os.environ, "CODEAGENT_POLICY": str(policy), "XDG_CACHE_HOME": str(tmp_path)}
    log = tmp_path / "node.log"
    (tmp_path / "repos" / "project").mkdir(parents=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "codeagent_lsp", "--tcp", "127.0.0.1:0",
         "--tls-cert", str(cert), "--tls-key", str(key), "--log-file", str(log),
         *node_settings(tiny_model, tmp_path / "repos"),
         "--rate", "100", "--burst", "300", "--max-pending", "16",
         "--metrics-port", str(free_port())],
        env=env, cwd=tmp_path,
    )  # fmt: skip
    port = await listening_port(process, log)
    yield process, port, int(process.args[process.args.index("--metrics-port") + 1])
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def node_settings(tiny_model: Path, repositories: Path, *more: str) -> list[str]:
    """A node's own model, engine and repositories (no client sets them)."""
    return ["--model", str(tiny_model), "--set", "engine.threads=1",
            "--repositories", str(repositories), *more]  # fmt: skip


async def connect(port: int, cert: Path) -> Client:
    context = ssl.create_default_context(cafile=str(cert))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    return Client(reader, writer)


async def initialize(
    client: Client, token: str, tiny_model: Path, workspace: Path, **options: Any
) -> None:
    params = {
        "processId": None,
        "capabilities": {},
        "rootUri": workspace.as_uri(),
        "initializationOptions": {"model": str(tiny_model), "engine": {"threads": 1}, **options},
    }
    answer = await client.request("initialize", params, token)
    assert answer["result"]["serverInfo"]["name"] == "codeagent-lsp"
    client.writer.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))


async def listening_port(process: subprocess.Popen, log: Path) -> int:
    """The port the node says it listens on (the log is a file: a full pipe would stall it)."""
    while process.poll() is None:
        text = log.read_text() if log.exists() else ""
        if match := re.search(r"serving on 127\.0\.0\.1:(\d+)", text):
            return int(match.group(1))
        await asyncio.sleep(0.1)
    raise AssertionError("the node did not start")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


async def test_unknown_or_missing_token_is_refused(node, tls_files) -> None:
    _, port, _ = node
    for token in (None, "not-a-token"):
        client = await connect(port, tls_files[0])
        message = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        client.writer.write(frame(message, token))
        answer = await client.read()  # id null: the body is not read before the token
        assert answer["error"]["code"] == -32600 and "unauthorized" in answer["error"]["message"]
        with pytest.raises((EOFError, asyncio.IncompleteReadError, ConnectionError)):
            await client.read()  # the server closed the connection


async def test_plain_tcp_client_cannot_talk_to_a_tls_node(node) -> None:
    _, port, _ = node
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame({"jsonrpc": "2.0", "id": 1, "method": "shutdown"}, TOKENS["calm"]))
    assert await asyncio.wait_for(reader.read(), timeout=30) == b""  # no LSP answer in clear


async def test_flood_with_cancel_storm_does_not_starve_another_client(
    node, tls_files, tiny_model: Path, tmp_path: Path, policy: Path
) -> None:
    process, port, metrics_port = node
    workspace = tmp_path / "project"
    workspace.mkdir()
    flooder, calm = await connect(port, tls_files[0]), await connect(port, tls_files[0])
    await initialize(flooder, TOKENS["flooder"], tiny_model, workspace)
    await initialize(calm, TOKENS["calm"], tiny_model, workspace)
    await calm.request(STATS)
    before = rss_kib(process.pid)

    async def flood() -> None:
        for msg_id in range(1000, 1000 + FLOOD):
            method = STATS if msg_id % 2 else "workspace/symbol"
            params = None if method == STATS else {"query": "x"}
            flooder.writer.write(frame({"jsonrpc": "2.0", "id": msg_id, "method": method,
                                        "params": params}))  # fmt: skip
            flooder.writer.write(
                frame({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": msg_id}})
            )
            if msg_id % 100 == 0:
                await flooder.writer.drain()

    async def collect() -> dict[int, dict[str, Any]]:
        answers: dict[int, dict[str, Any]] = {}
        while len(answers) < FLOOD:
            message = await flooder.read()
            if "id" in message and "method" not in message:
                answers[message["id"]] = message
        return answers

    async def meanwhile() -> list[dict[str, Any]]:
        return [await calm.request(STATS) for _ in range(20)]

    _, answers, calm_answers = await asyncio.gather(flood(), collect(), meanwhile())
    after = rss_kib(process.pid)

    assert all("result" in a for a in calm_answers), calm_answers
    assert sorted(answers) == list(range(1000, 1000 + FLOOD))  # every request answered once
    codes = {a.get("error", {}).get("code") for a in answers.values()}
    assert -32803 in codes  # rate limited
    assert codes <= {None, -32803, -32802, -32800}  # ok, rate limited, busy, cancelled
    tally = collections.Counter(a.get("error", {}).get("code") for a in answers.values())
    print(f"flood answers by error code: {dict(tally)}; RSS {before} -> {after} KiB")
    assert after - before < 200 * 1024, f"RSS grew from {before} to {after} KiB"

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
        scraped = response.read().decode()
    assert re.search(r'codeagent_denials_total\{reason="rate_limited"\} [1-9]', scraped)
    assert 'codeagent_request_seconds_bucket{le="0.005",method="codeagent/stats"}' in scraped
    assert "flood-token" not in scraped and "flooder" not in scraped

    process.send_signal(signal.SIGTERM)  # a clean stop: queued audit rows are written
    assert process.wait(timeout=60) == 0
    database = tmp_path / "audit.sqlite3"
    with sqlite3.connect(database) as db:
        rows = dict(
            db.execute(
                "SELECT decision, count(*) FROM audit WHERE token_name = 'flooder'"
                " AND feature = 'stats' GROUP BY decision"
            ).fetchall()
        )
    # stats answers synchronously: each of its requests is allowed or denied, never dropped.
    assert sum(rows.values()) == FLOOD // 2 and rows.get("deny", 0) > 0, rows
    env = {**os.environ, "CODEAGENT_POLICY": str(policy)}
    verify = subprocess.run(
        [sys.executable, "-m", "codeagent_lsp", "audit", "verify"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def notify(client: Client, method: str, params: dict[str, Any]) -> None:
    client.writer.write(frame({"jsonrpc": "2.0", "method": method, "params": params}))


async def complete(client: Client, uri: str) -> dict[str, Any]:
    """A completion at the end of the document's second line; its answer must not be an error."""
    params = {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}}
    answer = await client.request("textDocument/completion", params)
    assert "result" in answer, answer
    return answer


async def engine_stats(client: Client) -> dict[str, Any]:
    return (await client.request(STATS))["result"]


async def test_clients_share_one_model_with_slots_of_their_own(
    node, tls_files, tiny_model: Path, tmp_path: Path
) -> None:
    _, port, _ = node
    workspace = tmp_path / "repos" / "project"
    uri = (workspace / "same.py").as_uri()  # both edit a file of the same path
    alice, bob = await connect(port, tls_files[0]), await connect(port, tls_files[0])
    # No warm-up: each client's records are its one request.
    options = {"completion": {"maxTokens": 64, "multiline": "always", "warm": False}}
    await initialize(alice, TOKENS["calm"], tiny_model, workspace, **options)
    await initialize(bob, TOKENS["flooder"], tiny_model, workspace, **options)
    for client, text in ((alice, "def alice():\n    return "), (bob, "def bob():\n    return ")):
        document = {"uri": uri, "languageId": "python", "version": 1, "text": text}
        notify(client, "textDocument/didOpen", {"textDocument": document})

    await asyncio.gather(complete(alice, uri), complete(bob, uri))  # at once, on one engine
    mine, theirs = await engine_stats(alice), await engine_stats(bob)
    assert mine["shared"] == theirs["shared"] == {"engine": 1, "clients": 2, "loads": 1}
    for stats in (mine, theirs):  # each sees its own request, which the other did not supersede
        assert [r["outcome"] for r in stats["records"]] == ["ok"], stats["records"]
        assert len(stats["slots"]) == 1
    assert mine["slots"][0]["seq"] != theirs["slots"][0]["seq"]
    assert mine["records"][0]["document"] != theirs["records"][0]["document"]

    # A client's engine settings are the node's to decide: bob's are ignored, with a word.
    engine = {"threads": 1, "contextSize": 4096}
    notify(bob, "workspace/didChangeConfiguration", {"settings": {"codeagent": {"engine": engine}}})
    warning = await bob.read()
    assert warning["method"] == "window/showMessage", warning
    assert "codeagent.engine: set by the node" in warning["params"]["message"]
    await complete(bob, uri)
    await complete(alice, uri)
    mine, theirs = await engine_stats(alice), await engine_stats(bob)
    assert mine["shared"] == theirs["shared"] == {"engine": 1, "clients": 2, "loads": 1}

    alice.writer.close()  # one client leaves; the other is still served by the same engine
    await alice.writer.wait_closed()
    await complete(bob, uri)
    theirs = await engine_stats(bob)
    assert theirs["shared"]["engine"] == 1 and theirs["shared"]["loads"] == 1
    assert theirs["records"][-1]["outcome"] == "ok"


async def test_websocket_needs_a_token_in_the_handshake(
    tls_files: tuple[Path, Path], policy: Path, tmp_path: Path
) -> None:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidStatus

    cert, key = tls_files
    log = tmp_path / "node.log"
    env = {**os.environ, "CODEAGENT_POLICY": str(policy), "XDG_CACHE_HOME": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "codeagent_lsp", "--ws", "127.0.0.1:0", "--tls-cert", str(cert),
         "--tls-key", str(key), "--log-file", str(log)],
        env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        port = await listening_port(process, log)
        context = ssl.create_default_context(cafile=str(cert))
        with pytest.raises(InvalidStatus, match="401"):
            async with ws_connect(f"wss://127.0.0.1:{port}", ssl=context):
                pass
        headers = {"Authorization": f"Bearer {TOKENS['calm']}"}
        async with ws_connect(
            f"wss://127.0.0.1:{port}", ssl=context, additional_headers=headers
        ) as ws:
            await ws.send("{not json")
            assert json.loads(await ws.recv())["error"]["code"] == -32700
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "shutdown"}))
            assert json.loads(await ws.recv()) == {"jsonrpc": "2.0", "id": 1, "result": None}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
