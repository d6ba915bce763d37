"""The framing layer in front of pygls: property-based fuzz of the decoder, and a real server
process over stdio fed malformed frames that keeps answering."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from codeagent_lsp.transport import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    Frame,
    FrameDecoder,
    FramingError,
)

LIMIT = 4096


def frame(body: bytes, header: bytes = b"Content-Length", eol: bytes = b"\r\n") -> bytes:
    return header + b": " + str(len(body)).encode() + eol + eol + body


def decode_in_chunks(data: bytes, cuts: list[int]) -> list[Frame | FramingError]:
    decoder = FrameDecoder(LIMIT)
    out: list[Frame | FramingError] = []
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += decoder.feed(data[start:cut])
        start = max(start, cut)
    return out + decoder.feed(data[start:])


bodies = st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=20), max_size=4)
headers = st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
eols = st.sampled_from([b"\r\n", b"\n"])
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=6)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), cuts)
def test_random_bytes_never_crash_and_stay_bounded(data: bytes, where: list[int]) -> None:
    decoder = FrameDecoder(LIMIT)
    for item in decode_in_chunks(data, where):
        assert isinstance(item, Frame | FramingError)
        if isinstance(item, Frame):
            assert len(item.body) <= LIMIT
    assert len(decoder._buffer) <= LIMIT + 16


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=500), st.lists(bodies, min_size=1, max_size=3), headers, eols, cuts)
def test_valid_frames_after_garbage_are_decoded(
    garbage: bytes, messages: list[dict[str, Any]], header: bytes, eol: bytes, where: list[int]
) -> None:
    # Garbage that itself declares a length eats what follows, as it would in any decoder.
    assume(b"content-length" not in garbage.lower())
    encoded = [json.dumps(m).encode() for m in messages]
    stream = garbage + b"\r\n\r\n" + b"".join(frame(b, header, eol) for b in encoded)
    frames = [i.body for i in decode_in_chunks(stream, where) if isinstance(i, Frame)]
    assert frames[-len(encoded) :] == encoded


@given(st.integers(min_value=LIMIT + 1, max_value=10**15), bodies, eols)
def test_oversized_length_is_refused_and_the_next_frame_read(
    length: int, message: dict[str, Any], eol: bytes
) -> None:
    body = json.dumps(message).encode()
    stream = b"Content-Length: " + str(length).encode() + eol + eol + b"[1,2" + eol + frame(body)
    out = FrameDecoder(LIMIT).feed(stream)
    assert isinstance(out[0], FramingError) and out[0].code == INVALID_REQUEST
    assert out[1:] == [Frame(body)]


def test_authorization_header_is_kept_with_its_frame() -> None:
    stream = b"authorization: Bearer s3cret\r\n" + frame(b"{}")
    assert FrameDecoder().feed(stream) == [Frame(b"{}", "Bearer s3cret")]


def test_digits_outside_ascii_and_huge_numbers_are_invalid_lengths() -> None:
    for value in ("\u00b2".encode("latin-1"), b"9" * 5000, b"-5", b"12abc"):
        out = FrameDecoder().feed(b"Content-Length: " + value + b"\r\n\r\n" + frame(b"{}"))
        assert isinstance(out[0], FramingError) and "invalid Content-Length" in out[0].message
        assert out[-1] == Frame(b"{}")


# --- a real server over stdio -------------------------------------------------------------------


def read_message(stdout) -> dict[str, Any]:
    length = None
    while (line := stdout.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    assert length is not None, "the server closed its output"
    return json.loads(stdout.read(length))


def request(msg_id: int, method: str, params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode()


def notification(method: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": method}).encode()


def test_server_answers_malformed_frames_and_keeps_serving(tmp_path) -> None:
    hover = {"textDocument": {"uri": 5}, "position": "here"}
    stream = b"".join(
        [
            b"Content-Length: 1000000000000\r\n\r\n",  # pygls: MemoryError, the process exits
            frame(b"{not json"),  # pygls: no answer at all
            frame(b'{"jsonrpc": "2.0", "id": 3, "method": 42}', b"content-length", b"\n"),
            frame(request(4, "textDocument/hover", hover), b"CONTENT-length"),
            frame(b"[" * 100_000),  # deeper than Python's recursion limit
            frame(request(5, "initialize", {"capabilities": {}}), eol=b"\n"),
            frame(request(6, "shutdown", None)),
        ]
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "codeagent_lsp"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    try:
        server.stdin.write(stream)
        server.stdin.flush()
        answers = [read_message(server.stdout) for _ in range(7)]
        server.stdin.write(frame(b'{"jsonrpc": "2.0", "method": "exit"}'))
        server.stdin.close()
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
    errors = [(a.get("id"), a.get("error", {}).get("code")) for a in answers]
    assert errors == [
        (None, INVALID_REQUEST),  # over the 16 MiB cap, skipped
        (None, PARSE_ERROR),
        (3, INVALID_REQUEST),
        (4, INVALID_PARAMS),
        (None, PARSE_ERROR),
        (5, None),
        (6, None),
    ]
    assert answers[5]["result"]["serverInfo"]["name"] == "codeagent-lsp"


@pytest.mark.parametrize(
    ("before_exit", "status"),
    [
        ([], 1),  # exit as the first message
        ([request(1, "initialize", {"capabilities": {}})], 1),
        ([request(1, "initialize", {"capabilities": {}}), notification("initialized")], 1),
        ([request(1, "initialize", {"capabilities": {}}), request(2, "shutdown", None)], 0),
    ],
)
def test_exit_status_says_whether_shutdown_came_first(
    tmp_path, before_exit: list[bytes], status: int
) -> None:
    """LSP: `exit` ends the process with 0 after a `shutdown` request, else with 1."""
    server = subprocess.Popen(
        [sys.executable, "-m", "codeagent_lsp"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    try:
        for message in before_exit:
            server.stdin.write(frame(message))
            server.stdin.flush()
            if b'"id"' in message:
                assert "result" in read_message(server.stdout)
        server.stdin.write(frame(notification("exit")))
        server.stdin.flush()  # stdin stays open: the exit alone ends the process
        assert server.wait(timeout=30) == status
    finally:
        server.kill()


def test_requests_after_shutdown_are_answered_with_invalid_request(tmp_path) -> None:
    """LSP: after `shutdown` every request but `exit` gets InvalidRequest (pygls dropped them
    without a reply, and the client waited for ever); `exit` still ends the process with 0."""
    hover = {"textDocument": {"uri": "file:///a.py"}, "position": {"line": 0, "character": 0}}
    messages = [
        request(1, "initialize", {"capabilities": {}}),
        notification("initialized"),
        request(2, "shutdown", None),
        request(3, "codeagent/stats", {}),
        request(4, "shutdown", None),
        request(5, "textDocument/hover", hover),
        notification("exit"),
    ]
    server = subprocess.run(
        [sys.executable, "-m", "codeagent_lsp"],
        input=b"".join(frame(m) for m in messages), capture_output=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert server.returncode == 0
    out = io.BytesIO(server.stdout)
    answers = [read_message(out) for _ in range(server.stdout.count(b"Content-Length"))]
    refused = [(a["id"], a["error"]["code"]) for a in answers if "error" in a]
    assert refused == [(3, INVALID_REQUEST), (4, INVALID_REQUEST), (5, INVALID_REQUEST)]
    assert all("shutting down" in a["error"]["message"] for a in answers if "error" in a)
