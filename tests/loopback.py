"""Tiny socket servers on loopback for the remote-backend tests: one that never answers, one
that answers what it is given (garbage, or a canned llama-server stream). The real replicas
are `codeagent_lsp.bench.replica.LocalReplica`."""

from __future__ import annotations

import json
import socket
import threading

API_KEY = "test-token-3f9a"


class SocketServer:
    """A loopback TCP server answering each connection with `handle` on its own thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = threading.Event()
        """Set once a whole request has been read."""
        self.closed_by_client = threading.Event()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def read_request(self, conn: socket.socket) -> tuple[str, dict[str, str], bytes] | None:
        """The request (also kept in `requests`); None when the client hung up first."""
        data = b""
        while b"\r\n\r\n" not in data:
            received = conn.recv(65536)
            if not received:
                self.closed_by_client.set()
                return None
            data += received
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", headers.get("Content-Length", "0")))
        while len(body) < length:
            body += conn.recv(65536)
        request = (lines[0].split()[1], {k.lower(): v for k, v in headers.items()}, body)
        self.requests.append(request)
        self.received.set()
        return request

    def close(self) -> None:
        self.sock.close()


class HangingServer(SocketServer):
    """Accepts, reads the request, never answers; notices when the client hangs up."""

    def handle(self, conn: socket.socket) -> None:
        with conn:
            if self.read_request(conn) is None:
                return
            while conn.recv(4096):
                pass
            self.closed_by_client.set()


class CannedServer(SocketServer):
    """Answers every request with the same HTTP response bytes."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            if self.read_request(conn) is not None:
                conn.sendall(self.response)


def http_response(body: bytes, content_type: str = "text/event-stream") -> bytes:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def sse(*chunks: dict[str, object]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
