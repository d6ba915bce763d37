"""Navigation and hover from the CodeGraph over stdio, on the fixture projects: no model."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from codeagent_lsp.codegraph.store import default_db_path
from tests.conftest import EDITORS, PROJECTS, accept_registrations
from tests.lsp.test_actions import actions_params
from tests.lsp.test_server import inline, open_doc, stats, type_at

# (language, file, text just before the name, name): a use whose definition is in another file.
CROSS_FILE = [
    ("python", "app.py", "describe(", "Circle"),
    ("javascript", "app.js", "console.log(", "area"),
    ("typescript", "app.ts", "= new ", "Circle"),
    ("tsx", "App.tsx", "{shown && <", "Counter"),
    ("go", "main.go", "geo.", "NewCircle"),
    ("rust", "src/main.rs", "let c = ", "Circle"),
    ("java", "src/app/Main.java", "= new ", "Circle"),
    ("c", "main.c", 'printf("%f %f\\n", ', "circle_area"),
    ("cpp", "main.cpp", "geo::", "square"),
]


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"]),
    params=EDITORS,
)
async def graph_client(
    lsp_client: LanguageClient, request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path
):
    root = tmp_path / "workspace"
    for language in ("python", *{c[0] for c in CROSS_FILE}):
        shutil.copytree(PROJECTS / language, root / language, dirs_exist_ok=True)
    params = types.InitializeParams(
        capabilities=client_capabilities(request.param),
        initialization_options={
            "model": str(tiny_model),
            "engine": {"threads": 1},
            "codegraph": {"cacheDir": str(tmp_path / "cache")},
            "completion": {"warm": False},  # tests count each request's own record
        },
        workspace_folders=[types.WorkspaceFolder(root.as_uri(), "workspace")],
    )
    accept_registrations(lsp_client)
    lsp_client.initialize_result = await lsp_client.initialize_session(params)  # type: ignore[attr-defined]
    lsp_client.root = root  # type: ignore[attr-defined]
    lsp_client.cache_dir = tmp_path / "cache"  # type: ignore[attr-defined]
    for _ in range(300):
        graph = (await stats(lsp_client)).get("codegraph")
        if graph and graph["ready"]:
            break
        await asyncio.sleep(0.1)
    yield
    await lsp_client.shutdown_session()


def cursor_on(text: str, before: str, name: str) -> types.Position:
    offset = text.index(before + name) + len(before) + 1
    line = text.count("\n", 0, offset)
    return types.Position(line, offset - (text.rfind("\n", 0, offset) + 1))


def open_file(client: LanguageClient, relative: str) -> tuple[str, str]:
    path = client.root / relative  # type: ignore[attr-defined]
    text = path.read_text()
    uri = open_doc(client, path.parent, path.name, text)
    return uri, text


@pytest.mark.parametrize(("language", "file", "before", "name"), CROSS_FILE)
async def test_definition_across_files(
    graph_client: LanguageClient, language: str, file: str, before: str, name: str
):
    uri, text = open_file(graph_client, f"{language}/{file}")
    result = await graph_client.text_document_definition_async(
        types.DefinitionParams(types.TextDocumentIdentifier(uri), cursor_on(text, before, name))
    )
    assert result, f"no definition of {name}"
    elsewhere = [loc for loc in result if loc.uri != uri]
    assert elsewhere, f"{name} resolved only to the file using it"
    target = Path(elsewhere[0].uri.removeprefix("file://"))
    line = target.read_text().split("\n")[elsewhere[0].range.start.line]
    assert name in line


async def test_references_hover_and_symbols(graph_client: LanguageClient):
    uri, text = open_file(graph_client, "python/app.py")
    position = cursor_on(text, "describe(", "Circle")
    refs = await graph_client.text_document_references_async(
        types.ReferenceParams(
            context=types.ReferenceContext(include_declaration=True),
            text_document=types.TextDocumentIdentifier(uri),
            position=position,
        )
    )
    files = {Path(r.uri).name for r in refs}
    assert {"app.py", "geometry.py"} <= files

    hover = await graph_client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(uri), position)
    )
    content = hover.contents.value
    assert "class Circle(Shape)" in content
    assert "shapes/geometry.py" in content and "reference" in content

    geometry, _ = open_file(graph_client, "python/shapes/geometry.py")
    symbols = await graph_client.text_document_document_symbol_async(
        types.DocumentSymbolParams(types.TextDocumentIdentifier(geometry))
    )
    shape = next(s for s in symbols if s.name == "Shape")
    assert {"__init__", "area"} <= {c.name for c in shape.children}

    found = await graph_client.workspace_symbol_async(types.WorkspaceSymbolParams(query="Circ"))
    assert any(s.name == "Circle" for s in found)


async def test_watched_file_rename_and_delete(graph_client: LanguageClient):
    root = graph_client.root  # type: ignore[attr-defined]
    uri, text = open_file(graph_client, "python/app.py")
    position = cursor_on(text, "describe(", "Circle")
    old = root / "python/shapes/geometry.py"
    new = root / "python/shapes/geom.py"
    old.rename(new)
    graph_client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams(
            [
                types.FileEvent(old.as_uri(), types.FileChangeType.Deleted),
                types.FileEvent(new.as_uri(), types.FileChangeType.Created),
            ]
        )
    )
    params = types.DefinitionParams(types.TextDocumentIdentifier(uri), position)
    for _ in range(50):
        result = await graph_client.text_document_definition_async(params)
        if result and result[0].uri.endswith("geom.py"):
            break
        await asyncio.sleep(0.1)
    assert {Path(r.uri).name for r in result} == {"geom.py"}
    new.unlink()
    graph_client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams(
            [types.FileEvent(new.as_uri(), types.FileChangeType.Deleted)]
        )
    )
    for _ in range(50):
        result = await graph_client.text_document_definition_async(params)
        if not result:
            break
        await asyncio.sleep(0.1)
    assert not result


async def test_database_deleted_under_the_running_server(graph_client: LanguageClient):
    graph = (await stats(graph_client))["codegraph"]
    assert graph["files"] > 10
    for database in (graph_client.cache_dir).rglob("*.db*"):  # type: ignore[attr-defined]
        database.unlink()
    path = graph_client.root / "python" / "app.py"  # type: ignore[attr-defined]
    text = path.read_text() + "\n# edited\n"
    uri = open_doc(graph_client, path.parent, path.name, text)  # a write: the store notices
    params = types.DefinitionParams(
        types.TextDocumentIdentifier(uri), cursor_on(text, "describe(", "Circle")
    )
    for _ in range(100):
        result = await graph_client.text_document_definition_async(params)
        graph = (await stats(graph_client))["codegraph"]
        if result and graph["store"] == "rebuilt" and graph["ready"] and graph["files"] > 10:
            break
        await asyncio.sleep(0.2)
    assert result and Path(result[0].uri).name == "geometry.py"
    assert graph["files"] > 10  # indexed again, not just the one file
    assert graph["store"] == "rebuilt"
    assert list(graph_client.cache_dir.rglob("*.db"))  # type: ignore[attr-defined]


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"]),
    params=["unwritable", "corrupt"],
)
async def damaged_cache_client(
    lsp_client: LanguageClient, request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path
):
    """The CodeGraph's database cannot be used as it is: its cacheDir is a file, or the
    database there is not SQLite."""
    root = tmp_path / "workspace"
    shutil.copytree(PROJECTS / "python", root)
    cache = tmp_path / "cache"
    if request.param == "unwritable":
        cache.write_text("a file, not a folder")
    else:
        cache.mkdir()
        (cache / default_db_path(root).name).write_bytes(b"not a database" * 100)
    params = types.InitializeParams(
        capabilities=client_capabilities("neovim"),
        initialization_options={
            "model": str(tiny_model),
            "engine": {"threads": 1},
            "codegraph": {"cacheDir": str(cache)},
        },
        workspace_folders=[types.WorkspaceFolder(root.as_uri(), "workspace")],
    )
    accept_registrations(lsp_client)
    await lsp_client.initialize_session(params)
    lsp_client.root, lsp_client.damage = root, request.param  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


async def test_a_database_that_cannot_be_used_is_told_and_the_features_still_work(
    damaged_cache_client: LanguageClient,
):
    client = damaged_cache_client
    for _ in range(300):
        graph = (await stats(client)).get("codegraph")
        if graph and graph["ready"]:
            break
        await asyncio.sleep(0.1)
    expected = {"unwritable": "memory", "corrupt": "rebuilt"}[client.damage]  # type: ignore[attr-defined]
    assert graph["store"] == expected
    told = [m for m in client.messages if "CodeGraph" in m.message]
    assert len(told) == 1 and told[0].type == types.MessageType.Warning
    assert ("codegraph.cacheDir" in told[0].message) == (expected == "memory")
    uri, text = open_file(client, "app.py")
    result = await client.text_document_definition_async(
        types.DefinitionParams(
            types.TextDocumentIdentifier(uri), cursor_on(text, "describe(", "Circle")
        )
    )
    assert result and Path(result[0].uri).name == "geometry.py"


async def test_typing_in_a_function_keeps_the_context_cached(graph_client: LanguageClient):
    uri, text = open_file(graph_client, "python/app.py")
    start = cursor_on(text, "    return f", '"')
    line_end = types.Position(start.line, len(text.split("\n")[start.line]))
    type_at(graph_client, uri, line_end, "\n    ", 2)
    cursor = types.Position(line_end.line + 1, 4)
    await inline(graph_client, uri, cursor)
    for i, char in enumerate("total = c.area() * 2"):
        type_at(graph_client, uri, cursor, char, 3 + i)
        cursor = types.Position(cursor.line, cursor.character + 1)
        await inline(graph_client, uri, cursor)
    records = (await stats(graph_client))["records"]
    first, typed = records[0], records[1:]
    assert first["evaluatedTokens"] == first["promptTokens"] > 100
    assert len(typed) == 20
    for record in typed:  # the context and the file above stay cached; the suffix is shifted
        assert record["evaluatedTokens"] <= 8, record
        assert record["reusedTokens"] >= record["promptTokens"] - 8


async def test_locations_are_in_the_negotiated_encoding(graph_client: LanguageClient):
    root = graph_client.root  # type: ignore[attr-defined]
    extra = root / "python" / "units.py"
    extra.write_text("from shapes.geometry import area\n\nsurface_ünité = area(1, 2)\n")
    graph_client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams(
            [types.FileEvent(extra.as_uri(), types.FileChangeType.Created)]
        )
    )
    uri, _ = open_file(graph_client, "python/units.py")
    capabilities = graph_client.initialize_result.capabilities  # type: ignore[attr-defined]
    encoding = capabilities.position_encoding
    before = "surface_ünité = "
    expected = len(before.encode()) if encoding == "utf-8" else len(before)
    params = types.ReferenceParams(
        context=types.ReferenceContext(include_declaration=False),
        text_document=types.TextDocumentIdentifier(uri),
        position=types.Position(2, expected + 1),
    )
    for _ in range(50):
        refs = [
            r
            for r in await graph_client.text_document_references_async(params)
            if r.uri.endswith("units.py") and r.range.start.line == 2
        ]
        if refs:
            break
        await asyncio.sleep(0.1)
    assert refs[0].range.start.character == expected
    assert refs[0].range.end.character == expected + len("area")


async def test_indexing_reports_progress(graph_client: LanguageClient):
    assert graph_client.capabilities.window.work_done_progress  # type: ignore[union-attr]
    ((_, reports),) = [
        (t, r) for t, r in graph_client.progress_reports.items() if str(t).startswith("codeagent")
    ]
    kinds = [report.kind for report in reports]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    assert reports[0].title == "codeagent: indexing" and reports[0].cancellable
    assert "files" in reports[-1].message and "symbols" in reports[-1].message


async def test_hover_appends_an_explanation_while_the_code_is_unchanged(
    graph_client: LanguageClient,
):
    uri, text = open_file(graph_client, "python/app.py")
    body = text.split("\n").index('    return f"{c.name}: {c.area():.2f}"')
    actions = await graph_client.text_document_code_action_async(actions_params(uri, body))
    explain = next(a for a in actions if a.title == "Explain this code")
    await graph_client.code_action_resolve_async(explain)
    hover_params = types.HoverParams(
        types.TextDocumentIdentifier(uri), cursor_on(text, "print(", "describe")
    )
    hover = await graph_client.text_document_hover_async(hover_params)
    assert "def describe(c: Circle) -> str" in hover.contents.value
    assert "---\n\n# describe\n\n" in hover.contents.value
    edited = text.replace('{c.area():.2f}"', '{c.area():.3f}"')
    graph_client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            [types.TextDocumentContentChangeWholeDocument(text=edited)],
        )
    )
    hover = await graph_client.text_document_hover_async(hover_params)
    assert "# describe" not in hover.contents.value  # the explained code changed
