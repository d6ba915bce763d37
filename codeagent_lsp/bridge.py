"""`codeagent-lsp connect HOST:PORT`: an editor's stdio joined to a shared node over TCP.

Editors launch language servers over stdio and have no way to present a bearer token, so this
is the command they launch to use a shared node (`codeagent-lsp --tcp`): it opens one TLS
connection, puts `Authorization: Bearer <token>` in front of the first message (an LSP header
line, so the framing is untouched) and copies bytes both ways until either side closes. The
token comes from a file or an environment variable, never from the command line (which `ps`
shows to everyone on the machine).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from pathlib import Path

from codeagent_lsp.security import egress

_CHUNK = 1 << 16


class BridgeError(Exception):
    """The bridge cannot start; the message says what to fix."""


def read_token(token_file: Path | None, token_env: str | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BridgeError(f"cannot read the token file {token_file}: {exc}") from exc
    elif token_env:
        token = os.environ.get(token_env, "").strip()
    else:
        raise BridgeError("give the node's bearer token with --token-file or --token-env")
    if not token or any(c in token for c in "\r\n"):
        raise BridgeError("the bearer token is empty or spans several lines")
    return token


def client_tls(host: str, ca_file: Path | None, plaintext: bool) -> ssl.SSLContext | None:
    """TLS with the system's CAs or `ca_file`; clear text only to this machine and only when
    asked for (the node refuses clear text off loopback anyway)."""
    if plaintext:
        if not egress.is_local(host):
            raise BridgeError(f"--plaintext is for a node on this machine, not {host}")
        return None
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise BridgeError(f"cannot use the CA bundle {ca_file}: {exc}") from exc


async def bridge(host: str, port: int, token: str, tls: ssl.SSLContext | None) -> None:
    """Join this process's stdin and stdout to the node until one side closes."""
    loop = asyncio.get_running_loop()
    try:
        node_reader, node_writer = await asyncio.open_connection(host, port, ssl=tls)
    except OSError as exc:
        raise BridgeError(f"cannot reach the node at {host}:{port}: {exc}") from exc
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    stdout, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    node_writer.write(f"Authorization: Bearer {token}\r\n".encode())
    to_node = asyncio.create_task(_copy(stdin, node_writer.write, node_writer.drain))
    to_editor = asyncio.create_task(_copy(node_reader, stdout.write, _no_wait))
    await asyncio.wait((to_node, to_editor), return_when=asyncio.FIRST_COMPLETED)
    for task in (to_node, to_editor):
        task.cancel()
    node_writer.close()


async def _copy(source: asyncio.StreamReader, write, drain) -> None:
    while chunk := await source.read(_CHUNK):
        write(chunk)
        await drain()


async def _no_wait() -> None:
    return None
