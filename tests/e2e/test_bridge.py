"""`codeagent-lsp connect`: an editor speaking stdio reaches a shared TLS node with its token."""

# ruff: noqa: F811 - the node fixtures are imported from test_node and named as arguments

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.test_node import (  # noqa: F401 - node, policy and tls_files are fixtures
    STATS,
    TOKENS,
    Client,
    frame,
    initialize,
    node,
    policy,
    tls_files,
)


async def start_bridge(port: int, cert: Path, token: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codeagent_lsp", "connect", f"127.0.0.1:{port}",
        "--tls-ca", str(cert), "--token-env", "NODE_TOKEN",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "NODE_TOKEN": token},
    )  # fmt: skip


def client_of(process: asyncio.subprocess.Process) -> Client:
    return Client(process.stdout, process.stdin)  # type: ignore[arg-type]


async def test_an_editor_on_stdio_is_served_by_the_node_through_the_bridge(
    node,
    tls_files,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    _, port, _ = node
    process = await start_bridge(port, tls_files[0], TOKENS["calm"])
    editor = client_of(process)
    await initialize(editor, None, tiny_model, tmp_path)  # the bridge presents the token
    stats = await editor.request(STATS)
    assert "records" in stats["result"]
    await editor.request("shutdown")
    editor.writer.write(frame({"jsonrpc": "2.0", "method": "exit"}))
    assert await asyncio.wait_for(process.wait(), timeout=30) == 0


async def test_a_wrong_token_is_refused_by_the_node_and_the_bridge_ends(
    node,
    tls_files,
) -> None:
    _, port, _ = node
    process = await start_bridge(port, tls_files[0], "not-a-token")
    editor = client_of(process)
    editor.writer.write(frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
    answer = await asyncio.wait_for(editor.read(), timeout=30)
    assert "unauthorized" in answer["error"]["message"]
    await asyncio.wait_for(process.wait(), timeout=30)


def test_a_node_off_this_machine_the_policy_does_not_list_is_refused() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "codeagent_lsp", "connect", "192.0.2.1:7000", "--token-env", "T"],
        capture_output=True, text=True, env={**os.environ, "T": "x"}, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "192.0.2.1:7000 refused" in run.stderr


def test_the_token_never_comes_from_the_command_line() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "codeagent_lsp", "connect", "127.0.0.1:7000"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "--token-file or --token-env" in run.stderr
