"""A document's identity: every spelling of a file's URI has one normal form, and URIs that
name no local file are refused with a reason."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lsprotocol import types

from codeagent_lsp.documents import LspWorkspace
from codeagent_lsp.security import fileuri, guard
from codeagent_lsp.security.roots import Root

# Names with the characters editors encode differently: space, non-ASCII, #, %, +, @, and more.
segments = st.text(
    alphabet=st.sampled_from(list("ab -_.é漢😀#%+@&=;,!$'()~[]?")), min_size=1, max_size=12
).filter(lambda s: s not in (".", ".."))
paths = st.lists(segments, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


def spellings(path: str) -> list[str]:
    """How VS Code, Neovim and others write a file URI for the same path."""
    vscode = "file://" + quote(path, safe="/")
    neovim = "file://" + quote(path, safe="/!$&'()*+,;=:@~")
    lower_hex = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), vscode)
    return [vscode, neovim, lower_hex, "file://localhost" + vscode[7:], "FILE://" + vscode[7:]]


@given(paths)
def test_every_spelling_of_a_path_has_one_normal_form(path: str) -> None:
    for uri in spellings(path):
        assert fileuri.refusal(uri) is None, uri
        assert fileuri.path_of(uri) == PurePosixPath(path)
        assert fileuri.document_key(uri) == path
    assert fileuri.path_of(fileuri.uri_of(path)) == PurePosixPath(path)


@given(paths)
def test_the_workspace_finds_a_document_and_a_folder_in_any_spelling(path: str) -> None:
    workspace = LspWorkspace(None, types.TextDocumentSyncKind.Incremental)
    opened, *others = spellings(path)
    workspace.put_text_document(types.TextDocumentItem(opened, "python", 1, "x = 1\n"))
    for uri in others:
        document = workspace.get_text_document(uri)
        assert document.uri == opened  # replies name it as the client did
        assert document.source == "x = 1\n"
    end = types.Position(1, 0)
    change = types.TextDocumentContentChangePartial(types.Range(end, end), "y = 2\n")
    workspace.update_text_document(
        types.VersionedTextDocumentIdentifier(version=2, uri=others[-1]), change
    )
    assert workspace.get_text_document(opened).source == "x = 1\ny = 2\n"
    workspace.remove_text_document(others[0])
    assert workspace.text_documents == {}
    workspace.add_folder(types.WorkspaceFolder(opened, "f"))
    workspace.remove_folder(others[1])
    assert workspace.folders == {}


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("file:///c%3A/Users/me/a.py", "drive-letter"),
        ("file:///C:/Users/me/a.py", "drive-letter"),
        ("file:///d%3a", "drive-letter"),
        ("file://server/share/a.py", "another host"),
        ("untitled:Untitled-1", "only file: URIs"),
        ("file:///home/u/../../etc/passwd", "climbs out"),
        ("file:///home/u/%2e%2e/x", "climbs out"),
        ("file:///home/u/a%00.py", "NUL"),
        ("file:///home/u/%ff.py", "not UTF-8"),
    ],
)
def test_uris_naming_no_local_file_are_refused_with_a_reason(uri: str, reason: str, tmp_path):
    assert reason in (fileuri.refusal(uri) or "")
    assert fileuri.path_of(uri) is None
    assert reason in (guard.uri_refusal(uri, [Root.of("w", tmp_path)]) or "")


def test_a_drive_letter_inside_a_path_is_a_name_like_any_other():
    assert fileuri.path_of("file:///home/u/c%3A/a.py") == PurePosixPath("/home/u/c:/a.py")


def test_the_guard_reads_the_path_an_encoded_uri_names(tmp_path):
    folder = tmp_path / "my dir é#%+@"
    folder.mkdir()
    inside = fileuri.uri_of(folder / "a b.py")
    assert guard.uri_refusal(inside, [Root.of("w", folder)]) is None
    outside = fileuri.uri_of(tmp_path / "my dir é#%+@x" / "a.py")
    assert "outside" in (guard.uri_refusal(outside, [Root.of("w", folder)]) or "")
