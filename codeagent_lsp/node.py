"""A shared GPU node: `codeagent-lsp --tcp HOST:PORT` or `--ws HOST:PORT`, with TLS, bearer
tokens, per-token rate limits and Prometheus metrics.

Each connection gets its own language server (documents, settings, CodeGraph), so one client's
`exit`, bad settings or flood stays its own; the model is loaded once per node and shared (a
`BackendPool`: one engine per model file and engine settings, slots keyed per connection).
pygls's `start_tcp`/`start_ws` are not used: they share one protocol between all connections
(the last client to connect receives every answer) and end the process when the first client
leaves.

A client presents `Authorization: Bearer <token>` as a header of its first message (TCP) or of
the WebSocket handshake. The policy holds only the tokens' sha256 (`[[token]]` tables); a
presented token is hashed and compared with every entry in constant time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import logging
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

from pygls.io_ import WebSocketWriter

from codeagent_lsp import metrics
from codeagent_lsp.engine.pool import BackendPool
from codeagent_lsp.security.identity import Identity, os_identity
from codeagent_lsp.security.policy import Policy, policy_in_force
from codeagent_lsp.server import CodeagentServer
from codeagent_lsp.transport import CHUNK, Buckets, Connection, Limits, drain, stop_signal

log = logging.getLogger(__name__)

ServerFactory = Callable[[BackendPool], CodeagentServer]
"""A language server for one connection, borrowing its model from the node's pool."""
CLOSE_TIMEOUT_S = 2.0
"""How long a closing TCP/TLS connection may take to hand its last answers over, and then to
close: with transport.GRACE_S, a stop stays within the 10 s Docker gives before SIGKILL."""


def serve(args: argparse.Namespace, limits: Limits, new_server: ServerFactory) -> int:
    """Run the node until SIGTERM or SIGINT (`Node.stop`); returns the exit status."""
    transport = "ws" if args.ws else "tcp"
    host, port = split_address(args.ws or args.tcp)
    tls = tls_context(args.tls_cert, args.tls_key)
    policy = policy_in_force()
    if not policy.tokens and not _loopback(host):
        raise SystemExit(
            f"codeagent-lsp: --{transport} on {host} needs bearer tokens ([[token]] in the "
            "policy file): without them anyone on the network could use the node"
        )
    if tls is None and policy.tokens and not _loopback(host):
        raise SystemExit(
            f"codeagent-lsp: --{transport} on {host} needs --tls-cert/--tls-key: "
            "bearer tokens would cross the network in clear text"
        )
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    node = Node(new_server, limits, Authenticator(policy, transport))
    run = node.serve_ws if args.ws else node.serve_tcp
    asyncio.run(run(host, port, tls))
    return 0


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise SystemExit(f"codeagent-lsp: expected HOST:PORT, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None:
        raise SystemExit("codeagent-lsp: --tls-key needs --tls-cert")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"codeagent-lsp: cannot use the TLS certificate {cert}: {exc}") from exc
    return context


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Authenticator:
    """Authorization header -> the identity its bearer token stands for in the policy."""

    def __init__(self, policy: Policy, transport: str) -> None:
        self.policy, self.transport = policy, transport

    def __call__(self, authorization: str | None) -> Identity | None:
        if not self.policy.tokens:  # loopback without tokens: whoever started the node
            user = os_identity()
            return Identity(user.user, user.groups, self.transport)
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or self.policy.locked:
            return None
        digest = token_sha256(token.strip())
        found = None
        for entry in self.policy.tokens:  # no early exit: the time says nothing of the match
            if hmac.compare_digest(entry.sha256.lower(), digest):
                found = entry
        if found is None:
            return None
        return Identity(found.user, found.groups, self.transport, token_name=found.name)


class Node:
    def __init__(self, new_server: ServerFactory, limits: Limits, authenticate: Authenticator):
        self.new_server, self.limits, self.authenticate = new_server, limits, authenticate
        self.buckets = Buckets(limits.rate, limits.burst)
        self.models = BackendPool()
        self.bound: list[tuple[str, int]] = []
        """Addresses listened on (port 0 picks a free one), for tests and the log."""
        self.stopping = False
        self._clients: set[asyncio.Task[None]] = set()
        self._addresses: collections.Counter[str] = collections.Counter()
        """Open connections by client address (before authentication too)."""

    def _full(self, address: str) -> bool:
        """Does the node, or this address, hold as many connections as the limits allow?"""
        limits = self.limits
        full = sum(self._addresses.values()) >= limits.max_connections
        full = full or self._addresses[address] >= limits.max_connections_per_address
        if full:
            metrics.DENIALS.labels("too_many_connections").inc()
        return full

    @contextlib.contextmanager
    def _admitted(self, address: str) -> Iterator[bool]:
        """Counts a connection while it is open; False when the node or the address already
        holds as many as the limits allow (the caller closes it at once)."""
        if self._full(address):
            metrics.CONNECTIONS.labels("refused").inc()
            log.info("connection from %s refused: too many connections", address)
            yield False
            return
        self._addresses[address] += 1
        try:
            yield True
        finally:
            self._addresses[address] -= 1
            if not self._addresses[address]:
                del self._addresses[address]

    def connection(self, server: CodeagentServer, identity: Identity | None) -> Connection:
        if identity is not None:
            server.identity = identity

        def login(authorization: str | None) -> Identity | None:
            found = self.authenticate(authorization)
            if found is not None:
                server.identity = found  # what the policy decides and the audit log records
            return found

        return Connection(
            server.protocol,
            identity,
            self.limits,
            authenticate=login,
            buckets=self.buckets,
            network=True,
            on_denied=server.audit_refusal,
            inbound=server.folders.inbound if server.folders is not None else None,
            heavy=server.heavy_work(),
        )

    # --- TCP ------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop serving (on SIGTERM/SIGINT): no connection or request is read any more, the
        requests in progress are answered (cancelled after `transport.GRACE_S`), each client's
        audit rows written and its share of the model given back, then its socket closed."""
        self.stopping = True
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _serving(self, server: CodeagentServer, connection: Connection):
        """One client's read loop runs inside; `stop` cancels it and then waits here until the
        client's requests in progress are answered."""
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            task.uncancel()  # stopping is this task's work now, not its end
            await drain(connection)
        finally:
            self._clients.discard(task)
            _close(server, connection)

    async def serve_tcp(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        # TLS starts once a connection is admitted (`_tcp_client`), not in the listener: there
        # a connection that never finishes its handshake would hold a descriptor for the
        # handshake's 60 s, counted by no limit.
        listener = await asyncio.start_server(
            functools.partial(self._tcp_client, tls=tls), host, port
        )
        self._listening(listener.sockets)
        async with listener:
            await stop_signal()
            listener.close()  # no new connection (Server.serve_forever would wait for clients)
            await self.stop()

    async def _tcp_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext | None
    ) -> None:
        # A client that never authenticates holds no descriptor for long: the TLS handshake and
        # the first message share one deadline.
        deadline = asyncio.get_running_loop().time() + self.limits.auth_timeout_s
        with self._admitted(_address(writer)) as admitted:
            if admitted and await _secured(writer, tls, self.limits.auth_timeout_s):
                await self._tcp_session(reader, writer, deadline)
        await _close_tcp(reader, writer)

    async def _tcp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float
    ) -> None:
        server = self.new_server(self.models)
        server.protocol.set_writer(writer)  # a StreamWriter has write() and close()
        connection = self.connection(server, None)
        async with self._serving(server, connection):
            try:
                while not connection.closed and (
                    data := await _read(reader, None if connection.identity else deadline)
                ):
                    await connection.receive(data)
                    await writer.drain()  # a client that does not read its answers is slowed
            except (ConnectionError, ssl.SSLError) as exc:
                log.info("connection ended: %s", exc)
            except TimeoutError:
                metrics.DENIALS.labels("unauthorized").inc()
                log.info("connection closed: no authenticated message in time")

    # --- WebSocket ------------------------------------------------------------------------------

    async def serve_ws(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        from websockets.asyncio.server import serve

        async with serve(
            self._ws_client,
            host,
            port,
            ssl=tls,
            ssl_handshake_timeout=self.limits.auth_timeout_s if tls else None,
            open_timeout=self.limits.auth_timeout_s,
            process_request=self._ws_handshake,
            max_size=self.limits.max_message_bytes,
        ) as listener:
            self._listening(listener.sockets)
            await stop_signal()
            await self.stop()  # each handler returns, so websockets closes its connection

    def _ws_handshake(self, connection, request):  # websockets' process_request hook
        if self._full(_address(connection)):
            return connection.respond(503, "too many connections\n")
        identity = self.authenticate(request.headers.get("Authorization"))
        if identity is None:
            metrics.DENIALS.labels("unauthorized").inc()
            metrics.CONNECTIONS.labels("unauthorized").inc()
            return connection.respond(401, "unauthorized: send Authorization: Bearer <token>\n")
        connection.identity = identity
        return None

    async def _ws_client(self, websocket) -> None:
        with self._admitted(_address(websocket)) as admitted:
            if admitted:
                await self._ws_session(websocket)

    async def _ws_session(self, websocket) -> None:
        from websockets.exceptions import ConnectionClosed

        server = self.new_server(self.models)
        writer = _TrackedWebSocketWriter(websocket)
        server.protocol.set_writer(writer, include_headers=False)
        connection = self.connection(server, websocket.identity)
        metrics.CONNECTIONS.labels("accepted").inc()
        async with self._serving(server, connection):
            try:
                async for message in websocket:  # one JSON-RPC message each, no headers
                    await connection.handle_body(message)
                    if connection.closed:
                        break
            except ConnectionClosed:
                pass
        await writer.sent()  # websockets closes the connection once this handler returns

    def _listening(self, sockets) -> None:
        self.bound = [sock.getsockname()[:2] for sock in sockets]
        log.warning("serving on %s", ", ".join(f"{h}:{p}" for h, p in self.bound))


async def _secured(
    writer: asyncio.StreamWriter, tls: ssl.SSLContext | None, timeout: float
) -> bool:
    """Run the TLS handshake (when the node serves TLS) within `timeout` seconds; False when it
    fails or does not finish in time."""
    if tls is None:
        return True
    try:
        await writer.start_tls(tls, ssl_handshake_timeout=timeout)
    except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as exc:
        metrics.DENIALS.labels("unauthorized").inc()
        log.info("connection closed: no TLS handshake in time (%s)", type(exc).__name__)
        return False
    return True


async def _read(reader: asyncio.StreamReader, deadline: float | None) -> bytes:
    """The next bytes, by `deadline` (the loop's clock) when there is one (TimeoutError)."""
    if deadline is None:
        return await reader.read(CHUNK)
    remaining = max(0.0, deadline - asyncio.get_running_loop().time())
    return await asyncio.wait_for(reader.read(CHUNK), remaining)


def _address(stream) -> str:
    """The client's IP address of a TCP stream or WebSocket connection."""
    peer = stream.get_extra_info("peername") if hasattr(stream, "get_extra_info") else None
    peer = peer or getattr(stream, "remote_address", None)
    return str(peer[0]) if peer else "?"


class _TrackedWebSocketWriter(WebSocketWriter):
    """pygls's WebSocket writer, keeping the sends it starts: pygls runs each as a task and
    forgets it, so a connection closed at once would drop its last answers."""

    def __init__(self, websocket) -> None:
        super().__init__(websocket)
        self._sending: set[asyncio.Future[None]] = set()

    def write(self, data: bytes) -> asyncio.Future[None]:
        task = asyncio.ensure_future(super().write(data))
        self._sending.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled():
            task.exception()  # a send to a closed connection: nothing more to do

    async def sent(self) -> None:
        """Wait (up to CLOSE_TIMEOUT_S) until the sends started so far are done."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=CLOSE_TIMEOUT_S)


async def _close_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close so that the answers already written arrive, within 2 x CLOSE_TIMEOUT_S."""
    with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(_hand_over(reader, writer), CLOSE_TIMEOUT_S)
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)


async def _hand_over(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send what is buffered, then FIN, then read and drop what the client still sends until it
    closes. A socket closed with unread input is reset (RST), and the client's kernel then drops
    the answers the client had not read yet. (TLS cannot half-close: its close_notify exchange
    reads on by itself.)"""
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
        while await reader.read(CHUNK):
            pass


def _close(server: CodeagentServer, connection: Connection) -> None:
    """Free what one client's server holds (its share of the model, its CodeGraph)."""
    server.close()
    server.thread_pool.shutdown(wait=False, cancel_futures=True)
    server.heavy_lane.shutdown(wait=False, cancel_futures=True)
    log.info("client %s left", connection.identity.user if connection.identity else "?")
