"""Inputs real editors send, over stdio on the tiny model: file and folder names that URIs must
encode, each editor's spelling of them, files with form feeds and other characters Python
splits lines at, workspace folders added and removed at run time, non-ASCII identifiers and
text that is not valid Unicode."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import EDITORS, accept_registrations
from tests.lsp.test_actions import actions_params
from tests.lsp.test_server import inline, model_loaded, open_doc, plain, stats, type_at

ODD = "é#%+@ x"
"""Characters file names hold that URIs must encode: space, non-ASCII, #, %, +, @."""
GEO = "def größe(r):\n    return r * r\n\n\ndef area(r):\n    return größe(r) * 3\n"
APP = "def main():\n    value = größe(2)\n    return value\n"
FEED = (
    "def alpha():\n    return 1\n\x0c\n"
    "def beta():\n    return alpha()\n\x0b\x1c\u2028\n"
    "def gamma():\n    return beta()\n"
)
"""Functions separated by a form feed line, and by a line of other characters Python's
`splitlines` ends lines at and LSP does not."""
LONE_CR = "def first():\r    return 1\r\x0c\rdef second():\r\n    return first()\r\u2028\n"
"""Lines ended by a lone `\\r` (old Mac files), mixed with `\\r\\n` and `\\n`."""


def spell(path: Path, editor: str) -> str:
    """The URI an editor sends for a path: VS Code escapes all but letters, digits and
    `-._~/`; Neovim leaves RFC 3986's sub-delimiters, `:` and `@`, and uses lower-case hex."""
    if editor == "vscode":
        return "file://" + quote(str(path), safe="/")
    uri = "file://" + quote(str(path), safe="/!$&'()*+,;=:@~")
    return re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), uri)


async def wait_for_index(client: LanguageClient) -> None:
    for _ in range(300):
        graph = (await stats(client)).get("codegraph")
        if graph and graph["ready"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the index never became ready")


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"]),
    params=EDITORS,
)
async def odd_client(
    lsp_client: LanguageClient, request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path
):
    """A workspace folder whose name and files' names all need escaping in a URI."""
    root = tmp_path / f"my dir {ODD}"
    root.mkdir()
    (root / f"geo {ODD}.py").write_text(GEO)
    (root / f"app {ODD}.py").write_text(APP)
    (root / "feed.py").write_text(FEED)
    (root / "cr.py").write_bytes(LONE_CR.encode())
    spelling = "vscode" if request.param == "visual-studio-code" else "neovim"
    params = _initialize(request.param, tiny_model, tmp_path, spell(root, spelling), root.name)
    accept_registrations(lsp_client)
    lsp_client.initialize_result = await lsp_client.initialize_session(params)  # type: ignore[attr-defined]
    lsp_client.root, lsp_client.spelling = root, spelling  # type: ignore[attr-defined]
    await wait_for_index(lsp_client)
    yield
    await lsp_client.shutdown_session()


def _initialize(
    editor: str, tiny_model: Path, tmp_path: Path, folder_uri: str, name: str
) -> types.InitializeParams:
    """An editor's initialize request: one workspace folder, the tiny model on one thread, the
    CodeGraph's database under `tmp_path`."""
    return types.InitializeParams(
        capabilities=client_capabilities(editor),
        initialization_options={
            "model": str(tiny_model),
            "engine": {"threads": 1},
            "codegraph": {"cacheDir": str(tmp_path / "cache")},
        },
        workspace_folders=[types.WorkspaceFolder(folder_uri, name)],
    )


def open_spelled(client: LanguageClient, path: Path) -> str:
    uri = spell(path, client.spelling)  # type: ignore[attr-defined]
    item = types.TextDocumentItem(uri, "python", 1, path.read_text())
    client.text_document_did_open(types.DidOpenTextDocumentParams(item))
    return uri


def position_of(text: str, needle: str, delta: int = 1) -> types.Position:
    offset = text.index(needle) + delta
    line = text.count("\n", 0, offset)
    return types.Position(line, offset - (text.rfind("\n", 0, offset) + 1))


async def test_every_per_document_feature_on_names_that_need_escaping(odd_client: LanguageClient):
    client, root = odd_client, odd_client.root  # type: ignore[attr-defined]
    app = open_spelled(client, root / f"app {ODD}.py")
    geo = open_spelled(client, root / f"geo {ODD}.py")
    use = position_of(APP, "größe(2)")
    doc = types.TextDocumentIdentifier(app)

    hover = await client.text_document_hover_async(types.HoverParams(doc, use))
    assert "def größe(r)" in hover.contents.value
    (found,) = await client.text_document_definition_async(types.DefinitionParams(doc, use))
    assert found.uri == geo  # named as the client spelled it
    assert found.range.start == position_of(GEO, "größe(r):", 0)
    refs = await client.text_document_references_async(
        types.ReferenceParams(
            text_document=doc,
            position=use,
            context=types.ReferenceContext(include_declaration=True),
        )
    )
    assert {r.uri for r in refs} == {app, geo}
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))
    assert [s.name for s in symbols] == ["main"]
    (symbol,) = await client.workspace_symbol_async(types.WorkspaceSymbolParams("größe"))
    assert symbol.location.uri == geo

    end = types.Position(2, len("    return value"))
    items = (await inline(client, app, end)).items
    assert [i.range for i in items] == [types.Range(end, end)] * len(items)
    popup = await client.text_document_completion_async(types.CompletionParams(doc, end))
    assert popup.is_incomplete
    actions = await client.text_document_code_action_async(actions_params(app, line=0))
    assert {plain(a.data)["uri"] for a in actions} == {app}
    docstring = next(a for a in actions if a.title == "Add docstring to main")
    resolved = await client.code_action_resolve_async(docstring)
    assert set(resolved.edit.changes) == {app}

    type_at(client, app, types.Position(3, 0), "\ndef helper():\n    return main()\n", 2)
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))
    assert [s.name for s in symbols] == ["main", "helper"]
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(geo))
    )
    (found,) = await client.text_document_definition_async(types.DefinitionParams(doc, use))
    assert found.uri == spell(root / f"geo {ODD}.py", "vscode")  # closed: named from its path


async def test_an_edit_range_sent_end_first_replaces_the_same_text(odd_client: LanguageClient):
    """A CRLF file whose name needs escaping: the rename of `main` to `entry`, its range's ends
    sent swapped, replaces the name (pygls alone inserted at the range's start: `mainentry`)."""
    client, root = odd_client, odd_client.root  # type: ignore[attr-defined]
    path = root / f"crlf {ODD}.py"
    path.write_bytes(b"x = 1\r\ndef main():\r\n    return x\r\n")
    uri = open_spelled(client, path)
    swapped = types.Range(types.Position(1, 8), types.Position(1, 4))
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            [types.TextDocumentContentChangePartial(swapped, "entry")],
        )
    )
    doc = types.TextDocumentIdentifier(uri)
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))
    assert [(s.name, s.range.start.line) for s in symbols][-1] == ("entry", 1)


async def test_a_request_in_another_spelling_finds_the_open_document(odd_client: LanguageClient):
    client, root = odd_client, odd_client.root  # type: ignore[attr-defined]
    opened = open_spelled(client, root / f"app {ODD}.py")
    other = "vscode" if client.spelling == "neovim" else "neovim"  # type: ignore[attr-defined]
    for uri in (
        spell(root / f"app {ODD}.py", other),
        opened.replace("file://", "file://localhost", 1),
    ):
        params = types.HoverParams(types.TextDocumentIdentifier(uri), position_of(APP, "größe(2)"))
        assert "def größe(r)" in (await client.text_document_hover_async(params)).contents.value
    # Edits and the close may come in another spelling too.
    localhost = opened.replace("file://", "file://localhost", 1)
    type_at(client, localhost, types.Position(3, 0), "\ndef helper():\n    return 1\n", 2)
    doc = types.TextDocumentIdentifier(spell(root / f"app {ODD}.py", other))
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))
    assert [s.name for s in symbols] == ["main", "helper"]
    client.text_document_did_close(types.DidCloseTextDocumentParams(doc))
    with pytest.raises(JsonRpcInvalidParams, match="not open"):
        await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))


async def test_windows_drive_letter_uris_are_refused_cleanly(odd_client: LanguageClient):
    client = odd_client
    for uri in ("file:///c%3A/Users/me/a.py", "file:///C:/Users/me/b.py"):
        item = types.TextDocumentItem(uri, "python", 1, "x = 1\n")
        client.text_document_did_open(types.DidOpenTextDocumentParams(item))
        with pytest.raises(JsonRpcInvalidParams, match="drive-letter"):
            await inline(client, uri, types.Position(0, 5))
    warnings = [m.message for m in client.messages if "drive-letter" in m.message]
    assert len(warnings) == 2
    app = open_spelled(client, client.root / f"app {ODD}.py")  # type: ignore[attr-defined]
    hover = types.HoverParams(types.TextDocumentIdentifier(app), position_of(APP, "größe(2)"))
    assert await client.text_document_hover_async(hover)  # and the server goes on


# --- LSP's line model -------------------------------------------------------------------------


async def test_a_form_feed_line_moves_no_position(odd_client: LanguageClient):
    client, root = odd_client, odd_client.root  # type: ignore[attr-defined]
    uri = open_spelled(client, root / "feed.py")
    doc = types.TextDocumentIdentifier(uri)
    type_at(client, uri, types.Position(4, len("    return alpha()")), " + 1", 2)
    text = FEED.replace("alpha()\n", "alpha() + 1\n")
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))
    ranges = {s.name: s.selection_range.start for s in symbols}
    assert ranges == {
        name: position_of(text, f"def {name}", 4) for name in ("alpha", "beta", "gamma")
    }
    beta = next(s for s in symbols if s.name == "beta")
    assert beta.range.end == types.Position(4, len("    return alpha() + 1"))  # the edit landed
    for use, defined in (("alpha() +", "alpha():"), ("beta()\n", "beta():")):
        at = position_of(text, use)
        hover = await client.text_document_hover_async(types.HoverParams(doc, at))
        assert hover is not None and f"def {defined}"[:-1] in hover.contents.value
        found = await client.text_document_definition_async(types.DefinitionParams(doc, at))
        assert [f.range.start for f in found] == [position_of(text, defined, 0)]


async def test_lone_carriage_returns_end_lines_for_the_codegraph(odd_client: LanguageClient):
    """A file with lone `\\r` line ends (indexed from disk, then open): every symbol is on the
    line the editor shows, for definition, hover, references and documentSymbol."""
    client, root = odd_client, odd_client.root  # type: ignore[attr-defined]
    uri = spell(root / "cr.py", client.spelling)  # type: ignore[attr-defined]
    doc = types.TextDocumentIdentifier(uri)
    item = types.TextDocumentItem(uri, "python", 1, LONE_CR)
    client.text_document_did_open(types.DidOpenTextDocumentParams(item))
    at = types.Position(4, len("    return "))  # the editor's line 4: after three lone \r
    defined = types.Position(0, len("def "))
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))
    starts = {s.name: s.selection_range.start for s in symbols}
    assert starts == {"first": defined, "second": types.Position(3, len("def "))}
    found = await client.text_document_definition_async(types.DefinitionParams(doc, at))
    assert [f.range.start for f in found] == [defined]
    hover = await client.text_document_hover_async(types.HoverParams(doc, at))
    assert hover is not None and "def first()" in hover.contents.value
    assert "cr.py:1`" in hover.contents.value  # the line number an editor shows
    uses = await client.text_document_references_async(
        types.ReferenceParams(
            text_document=doc,
            position=at,
            context=types.ReferenceContext(include_declaration=False),
        )
    )
    assert [u.range.start for u in uses] == [at]


# --- identifiers are Unicode ------------------------------------------------------------------


async def test_the_popup_replaces_the_whole_unicode_word(odd_client: LanguageClient):
    client, root = odd_client, odd_client.root  # type: ignore[attr-defined]
    text = "fläche = 2\nprint(fläc"
    (root / "word.py").write_text(text)
    uri = open_spelled(client, root / "word.py")
    encoding = client.initialize_result.capabilities.position_encoding  # type: ignore[attr-defined]
    units = len if encoding == "utf-32" else (lambda s: len(s.encode("utf-16-le")) // 2)
    if encoding == "utf-8":
        units = lambda s: len(s.encode())  # noqa: E731
    end = types.Position(1, units("print(fläc"))
    result = await client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(uri), end)
    )
    (item,) = result.items
    assert item.text_edit.range == types.Range(types.Position(1, units("print(")), end)
    assert item.text_edit.new_text.startswith("fläc")
    assert item.filter_text.startswith("fläc") and item.label.startswith("fläc")


# --- workspace folders at run time, the policy, the log -----------------------------------------

STATE = Path(tempfile.gettempdir()) / f"codeagent-real-inputs-{os.getpid()}"
POLICY, LOG = STATE / "policy.toml", STATE / "server.log"


def _write_policy() -> None:
    """Written before the server starts: the policy is read once, at start."""
    STATE.mkdir(exist_ok=True)
    POLICY.write_text(
        '[defaults]\nrole = "member"\n\n[index]\nrepositories = ["main*", "extra*"]\n'
    )


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=[
            sys.executable,
            "-m",
            "codeagent_lsp",
            "--log-file",
            str(LOG),
            "--log-level",
            "info",
        ],
        server_env={**os.environ, "CODEAGENT_POLICY": str(POLICY), "XDG_STATE_HOME": str(STATE)},
    ),
)
async def policy_client(lsp_client: LanguageClient, tmp_path: Path, tiny_model: Path):
    """One workspace folder, an index policy that allows `main*` and `extra*` repositories,
    and the server's log at INFO."""
    root = tmp_path / "main"
    root.mkdir()
    (root / "app.py").write_text("def main():\n    return only_in_extra()\n")
    params = _initialize("visual-studio-code", tiny_model, tmp_path, root.as_uri(), "main")
    accept_registrations(lsp_client)
    await lsp_client.initialize_session(params)
    lsp_client.root = root  # type: ignore[attr-defined]
    await wait_for_index(lsp_client)
    yield
    await lsp_client.shutdown_session()


_write_policy()


def change_folders(client: LanguageClient, added=(), removed=()) -> None:
    event = types.WorkspaceFoldersChangeEvent(
        added=[types.WorkspaceFolder(spell(p, "vscode"), p.name) for p in added],
        removed=[types.WorkspaceFolder(spell(p, "vscode"), p.name) for p in removed],
    )
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(event))


async def test_folders_added_at_run_time_are_indexed_and_removed_ones_forgotten(
    policy_client: LanguageClient, tmp_path: Path
):
    client = policy_client
    extra, denied = tmp_path / f"extra {ODD}", tmp_path / "denied"
    for folder, name in ((extra, "only_in_extra"), (denied, "only_in_denied")):
        folder.mkdir()
        (folder / "lib.py").write_text(f"def {name}():\n    return 1\n")
    app = open_doc(client, client.root, "app.py", "def main():\n    return only_in_extra()\n")  # type: ignore[attr-defined]
    use = types.DefinitionParams(types.TextDocumentIdentifier(app), types.Position(1, 12))
    assert await client.text_document_definition_async(use) == []
    passes = len(client.progress_reports)

    change_folders(client, added=[extra, denied])
    await wait_for_index(client)
    (found,) = await client.text_document_definition_async(use)
    assert found.uri == spell(extra / "lib.py", "vscode")
    hover = types.HoverParams(use.text_document, use.position)
    assert "only_in_extra" in (await client.text_document_hover_async(hover)).contents.value
    query = types.WorkspaceSymbolParams("only_in")
    assert [s.name for s in await client.workspace_symbol_async(query)] == ["only_in_extra"]
    reports = list(client.progress_reports.values())[passes:]
    assert reports and isinstance(reports[-1][-1], types.WorkDoneProgressEnd)

    change_folders(client, removed=[extra])
    await wait_for_index(client)
    assert await client.text_document_definition_async(use) == []
    assert await client.workspace_symbol_async(query) == []


async def test_stats_say_ready_only_once_the_index_has_followed_a_folder_change(
    policy_client: LanguageClient,
):
    """A folder inside the workspace folder, added and removed: each change is waited for
    through stats alone, its files indexed once, and kept (under the outer folder) after the
    inner one is removed."""
    client = policy_client
    nested = client.root / f"extra {ODD}"  # type: ignore[attr-defined]
    nested.mkdir()
    (nested / "deep.py").write_text("def only_deep():\n    return 1\n")
    query = types.WorkspaceSymbolParams("only_deep")
    where = [spell(nested / "deep.py", "vscode")]
    for _ in range(2):
        change_folders(client, added=[nested])
        await wait_for_index(client)
        assert [s.location.uri for s in await client.workspace_symbol_async(query)] == where
        change_folders(client, removed=[nested])
        await wait_for_index(client)
        assert [s.location.uri for s in await client.workspace_symbol_async(query)] == where


async def test_error_replies_carry_no_traceback_and_refusals_log_once_at_info(
    policy_client: LanguageClient,
):
    client = policy_client
    logged_before = LOG.stat().st_size
    unopened = "file:///nowhere/never-opened.py"
    with pytest.raises(JsonRpcInvalidParams, match="not open") as refused:
        await inline(client, unopened, types.Position(0, 0))
    assert refused.value.data is None
    broken = types.CodeAction(title="x", data={"uri": 5, "line": "no"})
    with pytest.raises(JsonRpcException) as failed:
        await client.code_action_resolve_async(broken)
    assert failed.value.code == -32603
    assert failed.value.data is None
    assert failed.value.message.startswith("KeyError: ")
    assert "Traceback" not in failed.value.message and "site-packages" not in failed.value.message
    await stats(client)  # the server goes on
    log = LOG.read_bytes()[logged_before:].decode()
    refusals = [line for line in log.splitlines() if "never-opened.py" in line]
    assert len(refusals) == 1 and " INFO " in refusals[0], refusals
    assert log.count("Traceback") == 1  # the unexpected error's, in the log


async def test_a_lone_surrogate_from_the_client_is_tolerated(odd_client: LanguageClient):
    """JSON may carry half a surrogate pair (`"\\ud83d"`): the text is served with U+FFFD in
    its place, which keeps every position after it where the client has it."""
    client, root = odd_client, odd_client.root  # type: ignore[attr-defined]
    text = 'label = "\ud83d"\ntotal = la'
    (root / "half.py").write_text("")
    item = types.TextDocumentItem(spell(root / "half.py", "vscode"), "python", 1, text)
    client.text_document_did_open(types.DidOpenTextDocumentParams(item))
    end = types.Position(1, len("total = la"))
    items = (await inline(client, item.uri, end)).items
    assert [i.range for i in items] == [types.Range(end, end)] * len(items)
    type_at(client, item.uri, types.Position(0, 9), "\udc00 \ud800", 2)
    type_at(client, item.uri, types.Position(1, len("total = la")), "bel", 3)
    end = types.Position(1, len("total = label"))
    result = await client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(item.uri), end)
    )
    assert all(i.text_edit.range.start == types.Position(1, 8) for i in result.items)
    symbols = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(types.TextDocumentIdentifier(item.uri))
    )
    assert {s.name for s in symbols} == {"label", "total"}


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"]),
    params=[None, 5, "codeagent"],
)
async def misanswering_client(
    lsp_client: LanguageClient, request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path
):
    """A client whose answers to the server's requests do not fit them (`null` where
    workspace/configuration needs a list, a number, a string; some clients answer so when
    they hold no settings)."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "lib.py").write_text("def helper(x):\n    return x + 1\n")

    # In place of pytest-lsp's own handlers (registering a second one is refused).
    handlers = lsp_client.protocol.fm.features
    for method in (types.WORKSPACE_CONFIGURATION, types.WINDOW_WORK_DONE_PROGRESS_CREATE):
        handlers[method] = lambda _params: request.param
    params = _initialize("visual-studio-code", tiny_model, tmp_path, root.as_uri(), "project")
    accept_registrations(lsp_client)
    await lsp_client.initialize_session(params)
    lsp_client.root = root  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


async def test_an_answer_that_does_not_fit_the_request_holds_nothing_up(
    misanswering_client: LanguageClient,
):
    """The server's request fails instead of waiting for ever: the model loads and the
    workspace is indexed (both waited for the settings the client was asked for)."""
    client = misanswering_client
    await wait_for_index(client)
    uri = open_doc(client, client.root, "app.py", "from lib import helper\n\nhelper(2)\n")  # type: ignore[attr-defined]
    use = types.DefinitionParams(types.TextDocumentIdentifier(uri), types.Position(2, 2))
    (found,) = await client.text_document_definition_async(use)
    assert found.uri == (client.root / "lib.py").as_uri()  # type: ignore[attr-defined]
    await model_loaded(client)  # fails when the loading never starts
