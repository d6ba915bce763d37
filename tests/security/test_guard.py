"""Hostile input below the wire: document URIs and sizes, and GGUF headers crafted to make
llama.cpp allocate without bound."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from codeagent_lsp.engine.models import InvalidModel, check_gguf_header
from codeagent_lsp.security.guard import size_refusal, uri_refusal
from codeagent_lsp.security.roots import Root

# --- URIs ---------------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> list[Root]:
    inside = tmp_path / "project"
    (inside / "src").mkdir(parents=True)
    (inside / "src" / "ok.py").write_text("x = 1\n")
    (tmp_path / "secret.py").write_text("key = 1\n")
    (inside / "src" / "link.py").symlink_to(tmp_path / "secret.py")
    return [Root.of("project", inside)]


def test_files_inside_the_roots_are_served(roots: list[Root]) -> None:
    assert uri_refusal((roots[0].path / "src" / "ok.py").as_uri(), roots) is None
    assert uri_refusal((roots[0].path / "src" / "new.py").as_uri(), roots) is None  # unsaved


@pytest.mark.parametrize(
    ("suffix", "reason"),
    [
        ("/src/../../secret.py", ".."),
        ("/src/%2e%2e/%2E%2E/secret.py", ".."),
        ("/src/..%2f..%2fsecret.py", ".."),
        ("/src/..%5c..%5csecret.py", ".."),
        ("/src/ok.py%00.txt", "NUL"),
        ("/src/link.py", "symlink"),
    ],
)
def test_traversal_and_symlinks_are_refused(roots: list[Root], suffix: str, reason: str) -> None:
    uri = roots[0].path.as_uri() + suffix
    assert reason in (uri_refusal(uri, roots) or "")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("untitled:Untitled-1", "only file: URIs"),
        ("http://example.com/a.py", "only file: URIs"),
        ("vscode-remote://ssh/home/a.py", "only file: URIs"),
        ("file://otherhost/share/a.py", "another host"),
        ("file:///etc/passwd", "outside the workspace"),
    ],
)
def test_other_schemes_hosts_and_places_are_refused(
    roots: list[Root], uri: str, reason: str
) -> None:
    assert reason in (uri_refusal(uri, roots) or "")


def test_without_roots_only_the_uri_itself_is_checked() -> None:
    assert uri_refusal("file:///tmp/scratch.py", []) is None
    assert uri_refusal("file:///tmp/a/../../etc/passwd", []) is not None


def test_size_is_counted_in_utf8_bytes() -> None:
    assert size_refusal("a" * 100, 100) is None
    assert size_refusal("é" * 60, 100) is not None  # 120 bytes
    assert "over the limit" in (size_refusal("a" * 101, 100) or "")


# --- over LSP -----------------------------------------------------------------------------------


@pytest.mark.settings({"documents": {"maxBytes": 2000}})
async def test_a_too_large_document_is_refused_politely(
    client: LanguageClient, workspace: Path
) -> None:
    path = workspace / "big.py"
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, "x = 1\n" * 1000))
    )
    message = await client.wait_for_notification(types.WINDOW_SHOW_MESSAGE)
    assert "big.py is not served" in message.message and "2,000" in message.message
    with pytest.raises(Exception, match="not served"):
        await client.text_document_hover_async(
            types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(0, 0))
        )
    # Cut back under the limit, the same document is served again.
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(version=2, uri=uri),
            [types.TextDocumentContentChangeWholeDocument("x = 1\n")],
        )
    )
    await asyncio.wait_for(
        client.text_document_hover_async(
            types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(0, 0))
        ),
        timeout=30,
    )


async def test_a_document_outside_the_workspace_is_not_served(
    client: LanguageClient, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.py"
    outside.write_text("password = 'x'\n")
    item = types.TextDocumentItem(outside.as_uri(), "python", 1, outside.read_text())
    client.text_document_did_open(types.DidOpenTextDocumentParams(item))
    message = await client.wait_for_notification(types.WINDOW_SHOW_MESSAGE)
    assert "outside the workspace folders" in message.message
    with pytest.raises(Exception, match="outside the workspace"):
        await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
                text_document=types.TextDocumentIdentifier(item.uri),
                position=types.Position(0, 3),
            )
        )


# --- GGUF headers -------------------------------------------------------------------------------


def gguf_string(text: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(text) if length is None else length) + text


def kv(key: bytes, value_type: int, value: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", value_type) + value


def gguf(kvs: list[bytes], tensors: list[bytes] = (), padding: int = 4096) -> bytes:
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    return header + b"".join(kvs) + b"".join(tensors) + b"\0" * padding


def tensor(name: bytes, dims: list[int], tensor_type: int = 0, offset: int = 0) -> bytes:
    shape = struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
    return gguf_string(name) + shape + struct.pack("<IQ", tensor_type, offset)


ARCH = kv(b"general.architecture", 8, gguf_string(b"qwen2"))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (gguf([kv(b"a", 8, gguf_string(b"x", 1 << 62))]), "string value"),
        (gguf([gguf_string(b"k", 1 << 40)]), "metadata key"),
        (gguf([kv(b"tokens", 9, struct.pack("<IQ", 8, 1 << 40))]), "array of"),
        (gguf([kv(b"nest", 9, struct.pack("<IQ", 9, 1))]), "nested arrays"),
        (gguf([ARCH, kv(b"qwen2.block_count", 4, struct.pack("<I", 10**6))]), "blocks"),
        (gguf([kv(b"odd", 99, b"")]), "unknown value type"),
        (gguf([kv(b"short", 8, gguf_string(b"x", 5000))], padding=10), "truncated"),
        (gguf([ARCH], [tensor(b"w" * 5000, [4])]), "tensor name"),
        (gguf([ARCH], [tensor(b"w", [4] * 9)]), "dimensions"),
        (gguf([ARCH], [tensor(b"w", [1 << 40, 1 << 40])]), "dimension of"),
        (gguf([ARCH], [tensor(b"w", [4], tensor_type=1000)]), "unknown type"),
        (gguf([ARCH], [tensor(b"w", [4], offset=1 << 50)]), "past the end"),
    ],
)
def test_hostile_gguf_headers_are_refused_before_llama_cpp(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "hostile.gguf"
    path.write_bytes(content)
    with pytest.raises(InvalidModel, match=reason):
        check_gguf_header(path)


def test_a_plausible_header_passes(tmp_path: Path, tiny_model: Path) -> None:
    path = tmp_path / "fine.gguf"
    path.write_bytes(
        gguf(
            [ARCH, kv(b"qwen2.block_count", 4, struct.pack("<I", 24))],
            [tensor(b"w", [4, 4], offset=0)],
        )
    )
    assert check_gguf_header(path).tensor_count == 1
    assert check_gguf_header(tiny_model).kv_count > 10  # a real file llama.cpp loads
