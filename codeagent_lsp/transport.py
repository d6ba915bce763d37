"""The wire in front of pygls: framing, validation and admission, for stdio, TCP and WebSocket.

pygls 2.1.1's own reader is the weak spot (DESIGN.md): `Content-Length: 1000000000000` makes it
exit with MemoryError, lower-case or LF-only headers make it ignore every later message, and
invalid JSON gets no answer. Only the framing is hand-written here (FrameDecoder, a small state
machine over bytes, so it can be fuzzed without I/O); everything after it is pygls's: its
`structure_message` builds the typed message and its `handle_message` dispatches it.

What every message goes through (`Connection.receive`):
  frame  -> caps the size, skips what is malformed, never buffers more than one message;
  JSON   -> invalid JSON gets -32700 (id null), an object that is no JSON-RPC message -32600
            and parameters of the wrong shape -32602, with the id when it is known;
  admit  -> (requests only) the identity's token bucket and the connection's bound on requests
            in progress: past either the client gets an error at once instead of a queue;
  pygls  -> the message is handled as pygls would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter
from pygls.protocol import JsonRPCProtocol
from pygls.server import JsonRPCServer

from codeagent_lsp import metrics
from codeagent_lsp.security.identity import Identity

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_HEADER_LINE = 8 * 1024
"""A header line longer than this is garbage: it is dropped, not buffered."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_CANCELLED = -32802
"""LSP: the server cancelled the request; the client may send it again (used for "busy")."""
REQUEST_FAILED = -32803
"""LSP: a well-formed request failed (used for "rate limited")."""
UNAUTHORIZED = "unauthorized: send 'Authorization: Bearer <token>' with the first message"

_MARK = b"content-length:"
_CONTENT_LENGTH = re.compile(rb"\s*([0-9]{1,18})\s*")
# ASCII digits only: str.isdigit() accepts "²", which int() then rejects, and int() refuses
# strings of more than 4300 digits; 18 digits is already far beyond any cap.


@dataclass(frozen=True)
class Frame:
    body: bytes
    authorization: str | None = None
    """The frame's `Authorization` header, how a TCP client presents its bearer token."""


@dataclass(frozen=True)
class FramingError:
    code: int
    message: str


@dataclass
class _Headers:
    lines: int = 0
    length: int | None = None
    bad_length: bool = False
    authorization: str | None = None


class FrameDecoder:
    """Bytes in, frames and framing errors out. Headers are matched case-insensitively, lines
    may end in CRLF or LF, Content-Length is required and capped, and after any error the
    decoder carries on with the next header line, so one bad frame costs only itself."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._headers = _Headers()
        self._body_length: int | None = None
        self._skip = 0
        """Bytes of an oversized body still to throw away (never buffered)."""
        self._dropping_line = False
        self._line_start = True
        """Whether the next byte to skip starts a line."""

    def feed(self, data: bytes) -> list[Frame | FramingError]:
        self._buffer += data
        out: list[Frame | FramingError] = []
        while self._step(out):
            pass
        return out

    def _step(self, out: list[Frame | FramingError]) -> bool:
        """Consume what the buffer allows of one state; False when more bytes are needed."""
        buffer = self._buffer
        if self._skip:
            return self._skip_step()
        if self._body_length is not None:
            if len(buffer) < self._body_length:
                return False
            out.append(Frame(bytes(buffer[: self._body_length]), self._headers.authorization))
            del buffer[: self._body_length]
            self._body_length, self._headers = None, _Headers()
            return True
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) > MAX_HEADER_LINE:
                buffer.clear()
                if not self._dropping_line:
                    out.append(FramingError(PARSE_ERROR, "header line too long"))
                self._dropping_line = True
            return False
        line = bytes(buffer[:end]).rstrip(b"\r")
        del buffer[: end + 1]
        if self._dropping_line:  # the tail of an over-long line
            self._dropping_line = False
            return True
        error = self._header_line(line)
        if error is not None:
            out.append(error)
        return True

    def _skip_step(self) -> bool:
        """Throw away an oversized body, up to a line that starts with Content-Length: JSON
        cannot hold such a line (a string holds no raw newline), so the body ended there, or
        its length was a lie; either way the next frame starts there."""
        buffer = self._buffer
        window = bytes(buffer[: self._skip]).lower()
        if self._line_start and window.startswith(_MARK):
            cut = 0
        else:
            newline = window.find(b"\n" + _MARK)
            cut = newline + 1 if newline >= 0 else -1
        if cut >= 0:
            del buffer[:cut]
            self._skip = 0
            return True
        drop = len(window)
        if drop == len(buffer) and self._skip > drop:  # a mark may be cut between two reads
            drop = max(0, drop - len(_MARK))
        if drop == 0:
            return False
        self._line_start = buffer[drop - 1] == ord("\n")
        del buffer[:drop]
        self._skip -= drop
        return True

    def _header_line(self, line: bytes) -> FramingError | None:
        if not line.strip():
            return self._end_of_headers() if self._headers.lines else None
        # A body that came without a usable length is read as header lines; a Content-Length
        # later in such a line starts the next frame, so the stream finds its footing again.
        start = line.lower().rfind(_MARK)
        if start > 0:
            self._headers, line = _Headers(), line[start:]
        self._headers.lines += 1
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            match = _CONTENT_LENGTH.fullmatch(value)
            self._headers.length = int(match.group(1)) if match else None
            self._headers.bad_length = match is None
        elif name == b"authorization":
            self._headers.authorization = value.strip().decode("latin-1")
        return None

    def _end_of_headers(self) -> FramingError | None:
        headers, length = self._headers, self._headers.length
        if length is None:
            self._headers = _Headers()
            what = "invalid" if headers.bad_length else "missing"
            return FramingError(PARSE_ERROR, f"Parse error: {what} Content-Length header")
        if length > self.max_bytes:
            self._skip, self._headers, self._line_start = length, _Headers(), True
            return FramingError(
                INVALID_REQUEST,
                f"message of {length} bytes is over the limit of {self.max_bytes} bytes",
            )
        self._body_length = length
        return None


def message_problem(message: object) -> str | None:
    """Why a parsed JSON value is no JSON-RPC 2.0 message, or None when it is one."""
    if not isinstance(message, dict):
        return "a JSON-RPC message must be an object (batches are not supported)"
    if message.get("jsonrpc") != "2.0":
        return 'jsonrpc must be "2.0"'
    if "id" in message and not _valid_id(message["id"]):
        return "id must be an integer, a string or null"
    if "method" in message:
        if not isinstance(message["method"], str):
            return "method must be a string"
        if not isinstance(message.get("params"), dict | list | None):  # null: some clients
            return "params must be an object or an array"
        return None
    if "id" in message and ("result" in message or "error" in message):
        return None
    return "neither a request, a notification nor a response"


def _valid_id(value: object) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int) and not isinstance(value, bool))
    )


class TokenBucket:
    """Requests allowed per identity: `burst` at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class Buckets:
    """One token bucket per identity, shared by all of its connections."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[tuple[str, str | None], TokenBucket] = {}
        self._lock = threading.Lock()

    def of(self, identity: Identity) -> TokenBucket | None:
        if self.rate <= 0:
            return None
        key = (identity.user, identity.token_name)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            return bucket


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_pending: int = 64
    """Requests one connection may have in progress; more are answered "busy" at once."""
    rate: float = 50.0
    """Requests per second per token on TCP/WebSocket (0 = unlimited, as on stdio)."""
    burst: int = 200
    auth_timeout_s: float = 10.0
    """TCP: seconds a connection may stay without a first (authenticated) message."""
    max_connections: int = 512
    """Connections a node holds at once; more are closed at once."""
    max_connections_per_address: int = 32
    """Connections one client address holds at once; more are closed at once."""


@dataclass(frozen=True)
class HeavyWork:
    """A server's say in which messages are heavy and what of their work can be done before
    they are handled: that work runs on a worker thread while their connection waits, so one
    client's large edit does not stall the event loop every client shares."""

    is_heavy: Callable[[dict[str, Any]], bool]
    """Is this (decoded, JSON-RPC) message heavy beyond its size?"""
    prepare: Callable[[Any], Any]
    """A heavy structured message -> the message pygls then handles (e.g. edits applied)."""
    executor: concurrent.futures.Executor | None = None
    """The threads it runs on (None: the event loop's default executor)."""


@dataclass
class Connection:
    """One client's stream of messages into one pygls protocol."""

    protocol: JsonRPCProtocol
    identity: Identity | None
    """None until `authenticate` accepts the first frame's bearer token (TCP)."""
    limits: Limits = field(default_factory=Limits)
    authenticate: Callable[[str | None], Identity | None] | None = None
    """Authorization header -> identity, or None to refuse (and close) the connection."""
    buckets: Buckets | None = None
    network: bool = False
    """TCP/WebSocket: `exit` closes this connection only."""
    on_denied: Callable[[Identity, str, str], None] | None = None
    """(identity, method, reason) of each refused request, for the audit log."""
    inbound: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Rewrites each message before the server reads it (a node's paths for the client's)."""
    heavy: HeavyWork | None = None
    """Which messages are heavy beyond their size, and the server's part of their work."""
    closed: bool = field(init=False, default=False)
    """Set when the connection must end (refused token, `exit`): the transport closes it."""
    decoder: FrameDecoder = field(init=False)
    _pending: Counter[Any] = field(init=False, default_factory=Counter)
    """JSON-RPC ids (int or str) of the requests in progress (an id may repeat)."""
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.decoder = FrameDecoder(self.limits.max_message_bytes)

    async def receive(self, data: bytes) -> None:
        """Handle the bytes that arrived, message by message, in order."""
        for item in self.decoder.feed(data):
            if self.closed:
                return
            if isinstance(item, FramingError):
                metrics.DENIALS.labels("malformed").inc()
                self.reply_error(None, item.code, item.message)
            elif self.login(item.authorization):
                await self.handle_body(item.body)

    def login(self, authorization: str | None) -> bool:
        """Is the client known? The first message decides; a refused one ends the connection."""
        if self.identity is not None:
            return True
        if self.authenticate is not None:
            self.identity = self.authenticate(authorization)
        if self.identity is None:
            metrics.DENIALS.labels("unauthorized").inc()
            metrics.CONNECTIONS.labels("unauthorized").inc()
            self.reply_error(None, INVALID_REQUEST, UNAUTHORIZED)
            self.closed = True
            return False
        metrics.CONNECTIONS.labels("accepted").inc()
        return True

    async def handle_body(self, body: bytes | str) -> None:
        """Decode, check and handle one message. A heavy one (a large body, or work the server
        says is large: `is_heavy`) is decoded and prepared on a worker thread while this
        connection waits, so its order holds and other connections are served meanwhile."""
        large = len(body) > OFF_LOOP_BYTES
        try:
            message = await self._off_loop(_decode, body) if large else _decode(body)
        except (ValueError, RecursionError):  # RecursionError: "[[[[...", deeper than Python
            metrics.DENIALS.labels("malformed").inc()
            self.reply_error(None, PARSE_ERROR, "Parse error: the message is not valid JSON")
            return
        problem = message_problem(message)
        if problem is not None:
            metrics.DENIALS.labels("malformed").inc()
            self.reply_error(_id_of(message), INVALID_REQUEST, f"Invalid Request: {problem}")
            return
        heavy = large or (self.heavy is not None and self.heavy.is_heavy(message))
        await self.handle_message(message, heavy)

    async def handle_message(self, message: dict[str, Any], heavy: bool = False) -> None:
        method, msg_id = message.get("method"), message.get("id")
        is_request = method is not None and "id" in message
        if is_request and not self._admit(str(method), msg_id):
            return
        if method == "exit" and self.network:
            self.closed = True  # pygls would end the process, and every other client with it
            return
        if method == "$/cancelRequest" and not self._in_progress(message.get("params")):
            return  # answered already: pygls would log a warning for each one of a storm
        if self.inbound is not None:
            message = self.inbound(message)
        try:
            if heavy:
                structured = await self._off_loop(self._structure, message, True)
            else:
                structured = self._structure(message, False)
        except JsonRpcException as exc:
            metrics.DENIALS.labels("invalid_params").inc()
            if is_request:
                self.reply_error(msg_id, INVALID_PARAMS, f"Invalid params for {method}")
            elif method is None and msg_id is not None:
                self._fail_request(msg_id, type(exc.__cause__).__name__)
                return
            log.warning("%s: invalid params (%s)", method, type(exc.__cause__).__name__)
            return
        started = time.perf_counter()
        self.protocol.handle_message(structured)
        if is_request:
            self._track(self._label(str(method)), msg_id, started)

    def _fail_request(self, msg_id: object, problem: str) -> None:
        """A client's answer that does not fit the server's request (`null` where
        workspace/configuration needs a list): the request fails with an error instead of
        waiting for ever (it would hold up the model's loading and the index)."""
        log.warning("the client's answer to request %s does not fit it (%s)", msg_id, problem)
        error = {"code": INTERNAL_ERROR, "message": f"the client's answer does not fit ({problem})"}
        answer = {"jsonrpc": "2.0", "id": msg_id, "error": error}
        self.protocol.handle_message(self.protocol.structure_message(answer))

    def _structure(self, message: dict[str, Any], heavy: bool) -> Any:
        """The typed message; a heavy one also prepared by the server (`HeavyWork.prepare`)."""
        structured = self.protocol.structure_message(message)
        if not heavy or self.heavy is None:
            return structured
        try:
            return self.heavy.prepare(structured)
        except Exception:  # pygls handles the message as it came, and reports what fails
            log.exception("preparing a %s message failed", message.get("method"))
            return structured

    async def _off_loop(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` on a worker thread (`HeavyWork.executor`), awaited."""
        executor = self.heavy.executor if self.heavy is not None else None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(function, *args))

    def _admit(self, method: str, msg_id: object) -> bool:
        reason = None
        bucket = self.buckets.of(self.identity) if self.buckets and self.identity else None
        if bucket is not None and not bucket.take():
            reason, code, text = "rate_limited", REQUEST_FAILED, "rate limited: retry later"
        elif self.pending >= self.limits.max_pending:
            reason, code, text = "busy", SERVER_CANCELLED, "server busy: too many requests"
        if reason is None:
            return True
        metrics.DENIALS.labels(reason).inc()
        metrics.REQUESTS.labels(self._label(method), reason).inc()
        if self.on_denied is not None and self.identity is not None:  # set by login()
            self.on_denied(self.identity, method, reason)
        self.reply_error(msg_id, code, text)
        return False

    def _track(self, method: str, msg_id: Any, started: float) -> None:
        """Count the request as in progress until pygls's future for it is done."""
        future = self.protocol._request_futures.get(msg_id)  # pygls keeps no public handle
        if future is None or future.done():
            _observe(method, started, "ok")
            return
        with self._lock:
            self._pending[msg_id] += 1

        def done(fut: Any) -> None:
            with self._lock:
                self._pending[msg_id] -= 1
                if not self._pending[msg_id]:
                    del self._pending[msg_id]
            _observe(method, started, "cancelled" if fut.cancelled() else "ok")

        future.add_done_callback(done)

    def _label(self, method: str) -> str:
        """The method as a metrics label: only methods this server has, so labels stay few."""
        features = self.protocol.fm
        known = method in features.features or method in features.builtin_features
        return method if known else "other"

    def _in_progress(self, params: object) -> bool:
        msg_id = params.get("id") if isinstance(params, dict) else None
        with self._lock:
            return _valid_id(msg_id) and msg_id in self._pending

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending.total()

    def cancel_pending(self) -> None:
        """Cancel the requests in progress: pygls answers each "cancelled" (a request running on
        a worker thread cannot be stopped and answers when it ends)."""
        with self._lock:
            ids = list(self._pending)
        for msg_id in ids:
            future = self.protocol._request_futures.get(msg_id)  # pygls keeps no public handle
            if future is not None:
                future.cancel()

    def reply_error(self, msg_id: object, code: int, message: str) -> None:
        error = {"code": code, "message": message}
        # _send_data frames the reply the way this connection's writer needs (headers or not).
        self.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "error": error})


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _text_of(body: bytes | str) -> str:
    """A body's text: bytes that are not UTF-8 become U+FFFD (the rest of the message stands)."""
    return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body


def valid_text(value: Any) -> Any:
    """`value` with every lone surrogate in its strings replaced by U+FFFD. JSON may carry one
    (`"\\ud83d"`, half an emoji cut by a client); Python's json keeps it, and it cannot be
    encoded later (UTF-8 for the model, the audit log). U+FFFD is one code point and one UTF-16
    unit, as the surrogate was, so the client's positions stay right."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value) if _LONE_SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {valid_text(k): valid_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_text(v) for v in value]
    return value


def _id_of(message: object) -> object:
    if isinstance(message, dict) and _valid_id(message.get("id")):
        return message.get("id")
    return None


def _observe(method: str, started: float, outcome: str) -> None:
    metrics.REQUESTS.labels(method, outcome).inc()
    metrics.LATENCY.labels(method).observe(time.perf_counter() - started)


CHUNK = 64 * 1024
OFF_LOOP_BYTES = 256 * 1024
"""A message body larger than this is decoded on a worker thread, not the event loop."""


def _decode(body: bytes | str) -> Any:
    """The JSON value of a message body, lone surrogates replaced (`valid_text`)."""
    return valid_text(json.loads(_text_of(body)))


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 5.0
"""After SIGTERM/SIGINT, how long requests in progress may run on before they are cancelled:
within the 10 s Docker waits before SIGKILL (Kubernetes waits 30 s, systemd 90 s)."""
CANCEL_GRACE_S = 1.0
"""How long cancelled requests get to end and be answered "cancelled"."""
SETTLE_POLL_S = 0.01


async def stop_signal() -> str:
    """Wait for SIGTERM or SIGINT and return its name. systemd, Docker and Kubernetes stop a
    service with SIGTERM, which Python does not turn into an exception: unhandled, it ends the
    process at once and the rows queued for the audit log with it. Handled in the event loop, so
    the server can stop between two messages. A second signal, while stopping, ends the process
    at once (the handlers are gone by then)."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig.name)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        name = await received
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    log.warning("%s: stopping (requests in progress get up to %.0f s)", name, GRACE_S)
    return name


async def drain(connection: Connection) -> None:
    """Let the connection's requests in progress finish and be answered (so each has its answer
    and its audit row); those still running after GRACE_S are cancelled and answered so."""
    if not await _settled(connection, GRACE_S):
        log.warning(
            "%d requests still running after %.0f s: cancelled", connection.pending, GRACE_S
        )
        connection.cancel_pending()
        await _settled(connection, CANCEL_GRACE_S)


async def _settled(connection: Connection, timeout_s: float) -> bool:
    # Polled: requests end on the event loop and on worker threads, so there is no one event
    # to wait on, and a stop is rare enough that 10 ms steps cost nothing.
    deadline = asyncio.get_running_loop().time() + timeout_s
    while connection.pending and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(SETTLE_POLL_S)
    return not connection.pending


def serve_stdio(
    server: JsonRPCServer,
    identity: Identity,
    limits: Limits,
    on_denied: Callable[[Identity, str, str], None] | None = None,
    heavy: HeavyWork | None = None,
) -> int:
    """Serve one client over stdin/stdout until stdin ends, the client sends `exit`, or
    SIGTERM/SIGINT arrives (then the requests in progress are answered first). `on_denied` and
    `heavy` as for `Connection`. Returns the process's exit status: 1 for an `exit` without a
    `shutdown` before it (as the LSP specification says), else 0 (a stop signal included)."""
    server.protocol.set_writer(StdoutWriter(sys.stdout.buffer))
    connection = Connection(server.protocol, identity, limits, on_denied=on_denied, heavy=heavy)
    status = 0
    try:
        status = asyncio.run(_serve_stdio(connection))
    except BrokenPipeError:
        log.error("the client closed stdout; shutting down")
    finally:
        server.shutdown()
    return status


async def _serve_stdio(connection: Connection) -> int:
    """The exit status, once stdin ends, the client sends `exit` or a stop signal came."""
    pump = asyncio.ensure_future(_pump(sys.stdin.fileno(), connection))
    stop = asyncio.ensure_future(stop_signal())
    await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
    if pump.done():  # no signal to wait for any more
        stop.cancel()
        return pump.result()
    pump.cancel()  # no more messages are read
    await drain(connection)
    return 0


async def _pump(fd: int, connection: Connection) -> int:
    """Feed stdin to the connection until it ends or the client sends `exit`; the exit status.
    The blocking reads happen on a daemon thread, so a client that keeps stdin open after `exit`
    cannot hold the process (os.read, not sys.stdin: a daemon thread blocked inside a buffered
    reader's lock aborts the interpreter at exit); the queue bounds what is read ahead of the
    event loop."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)

    def read() -> None:
        data = b"x"
        while data:
            data = os.read(fd, CHUNK)
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):  # the server is ending
                return

    threading.Thread(target=read, name="stdin-reader", daemon=True).start()
    try:
        while (data := await chunks.get()) and not connection.closed:
            await connection.receive(data)
    except SystemExit as exc:  # pygls's `exit` handler: 0 after `shutdown`, else 1
        # Caught here: escaping a task, it would also be logged as never retrieved.
        return exc.code if isinstance(exc.code, int) else 1
    return 0
