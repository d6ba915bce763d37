"""The language server and its llama.cpp worker process talk through length-prefixed JSON
messages over the worker's stdin and stdout, and through a few shared bytes for cancellation.

Messages are JSON objects with an `op` (parent to worker: load, generate, cancel, stop, release,
releaseOwner; worker to parent: loaded, loadFailed, piece, result, error, slots). JSON rather
than pickle: the parent must not unpickle what a crashed or hostile native process wrote.

Cancellation does not wait for a message: `SharedFlags` maps one page that both processes see.
llama.cpp's abort callback reads its first byte between graph nodes (see `llama._AbortFlag`),
so the parent stops a prompt evaluation in the worker by writing one byte.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import IO, Any

_HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 * 1024 * 1024
"""Bytes; far above any prompt (tokens as JSON numbers) the context can hold."""

Message = dict[str, Any]


class ProtocolError(Exception):
    """The other side sent something that is not a message (it died mid-write, or is broken)."""


def write_message(stream: IO[bytes], message: Message) -> None:
    """One message: a 4-byte big-endian length, then UTF-8 JSON (non-ASCII escaped, so lone
    surrogates from a client survive the trip)."""
    body = json.dumps(message, separators=(",", ":")).encode("ascii")
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def read_message(stream: IO[bytes]) -> Message | None:
    """The next message; None at a clean end of stream. Raises ProtocolError on a torn or
    oversized frame."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise ProtocolError("the stream ended inside a message header")
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE:
        raise ProtocolError(f"a message of {size} bytes is over the limit")
    body = stream.read(size)
    if len(body) < size:
        raise ProtocolError("the stream ended inside a message")
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("a message without an op")
    return message


@dataclass
class SharedFlags:
    """One shared page: byte 0 the abort flag llama.cpp polls (byte 1 stays NUL, see
    `_AbortFlag`), bytes 8-15 the id of the request the worker is running, bytes 16-23 the id
    of the request the parent cancelled last through the page."""

    page: mmap.mmap
    fd: int

    _RUNNING = 8
    _CANCELLED = 16
    SIZE = mmap.PAGESIZE

    @classmethod
    def create(cls) -> SharedFlags:
        """A new page backed by an unlinked temporary file; pass `fd` to the worker."""
        fd, path = tempfile.mkstemp(prefix="codeagent-flags-")
        os.unlink(path)
        os.ftruncate(fd, cls.SIZE)
        return cls(mmap.mmap(fd, cls.SIZE), fd)

    @classmethod
    def attach(cls, fd: int) -> SharedFlags:
        return cls(mmap.mmap(fd, cls.SIZE), fd)

    def _get(self, offset: int) -> int:
        return int.from_bytes(self.page[offset : offset + 8], "little", signed=True)

    def _put(self, offset: int, value: int) -> None:
        self.page[offset : offset + 8] = value.to_bytes(8, "little", signed=True)

    @property
    def running(self) -> int:
        return self._get(self._RUNNING)

    @running.setter
    def running(self, request_id: int) -> None:
        self._put(self._RUNNING, request_id)

    @property
    def cancelled(self) -> int:
        return self._get(self._CANCELLED)

    def cancel_running(self, request_id: int) -> None:
        """Abort `request_id` now if the worker is running it (else the message will do)."""
        if self.running == request_id:
            self._put(self._CANCELLED, request_id)
            self.page[0] = ord("x")

    def close(self) -> None:
        self.page.close()
        os.close(self.fd)
