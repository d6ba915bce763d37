"""Next edits over stdio: change a definition in an open document, and every use it affects
is flagged (Hint diagnostics, source codeagent), fixable one by one or all at once, cleared
when updated or undone; rename and prepareRename from the same graph. The tiny model writes
the calls of a changed signature: its noise must never become an edit that does not parse or
bind."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from codeagent_lsp.actions import testgen
from tests.lsp.test_actions import actions_params
from tests.lsp.test_server import inline, open_doc
from tests.security.test_policy import governed, policy_env
from tests.security.test_repository_rules import indexed

__all__ = ["governed", "policy_env"]  # fixtures

GEO = (
    "def area(width, height):\n"
    "    return width * height\n"
    "\n"
    "\n"
    "class Box:\n"
    "    def __init__(self, w):\n"
    "        self.w = w\n"
    "\n"
    "\n"
    "async def fetch(n):\n"
    "    return n\n"
    "\n"
    "\n"
    "LIMIT = 10\n"
)
APP = (
    "from geo import LIMIT, Box, area, fetch\n"
    "\n"
    "\n"
    "def total():\n"
    "    return area(2, 3) + area(4, height=5)\n"
    "\n"
    "\n"
    "def make():\n"
    "    return Box(LIMIT)\n"
    "\n"
    "\n"
    "async def run():\n"
    "    return await fetch(1)\n"
)
OTHER = "from geo import area\n\nSIDE = area(1, 1)\n"
NO_WARM = {"completion": {"warm": False}, "logging": {"level": "info"}}


@pytest.fixture
def project(workspace: Path) -> Path:
    """Written before the server starts (tests name this fixture before `client`)."""
    (workspace / "geo.py").write_text(GEO)
    (workspace / "app.py").write_text(APP)
    (workspace / "other.py").write_text(OTHER)
    return workspace


def change(client: LanguageClient, uri: str, text: str, version: int) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [types.TextDocumentContentChangeWholeDocument(text)],
        )
    )


async def flagged(
    client: LanguageClient, uri: str, done: Callable[[Sequence[types.Diagnostic]], bool]
) -> list[types.Diagnostic]:
    """The diagnostics of `uri` once `done` holds for them."""
    for _ in range(600):
        found = client.diagnostics.get(uri, [])
        if done(found):
            return list(found)
        await asyncio.sleep(0.05)
    raise AssertionError(f"diagnostics of {uri} never settled: {client.diagnostics.get(uri)}")


def apply(text: str, edits: Sequence[types.TextEdit]) -> str:
    """Edits (ASCII text: UTF-16 columns are code points) applied from the last one."""
    rows = text.split("\n")

    def offset(p: types.Position) -> int:
        return sum(len(r) + 1 for r in rows[: p.line]) + p.character

    for edit in sorted(edits, key=lambda e: offset(e.range.start), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end) :]
    return text


async def start(client: LanguageClient, root: Path) -> str:
    await indexed(client)
    return open_doc(client, root, "geo.py", GEO)


def lines_of(diagnostics: Sequence[types.Diagnostic]) -> list[int]:
    return sorted(d.range.start.line for d in diagnostics)


@pytest.mark.settings(NO_WARM)
async def test_rename_flags_every_use_and_fixes_them(project: Path, client: LanguageClient):
    geo = await start(client, project)
    app, other = open_doc(client, project, "app.py", APP), (project / "other.py").as_uri()
    change(client, geo, GEO.replace("def area(", "def surface("), 2)
    found = await flagged(client, app, lambda d: len(d) == 3)
    assert lines_of(found) == [0, 4, 4]  # the import and both calls
    for diagnostic in found:
        assert diagnostic.severity == types.DiagnosticSeverity.Hint
        assert diagnostic.source == "codeagent"
        assert diagnostic.message == "`area` was renamed to `surface`"
    assert len(await flagged(client, other, lambda d: len(d) == 2)) == 2

    # One quickfix: the edit is there at once (no model), and the file still parses.
    actions = await client.text_document_code_action_async(actions_params(app, 4, found))
    fix = next(a for a in actions if a.kind == types.CodeActionKind.QuickFix)
    assert fix.title == "Rename to `surface`"
    fixed = apply(APP, fix.edit.changes[app])
    assert "surface(2, 3)" in fixed and testgen.parse_errors(fixed, "python") == 0

    # The source action in the changed document updates every use, with confirmation.
    actions = await client.text_document_code_action_async(actions_params(geo, 0))
    (update,) = [a for a in actions if a.kind == types.CodeActionKind.Source and "uses" in a.title]
    assert update.title == "Update all 5 uses of `area`"
    resolved = await client.code_action_resolve_async(update)
    edit = resolved.edit
    assert edit.change_annotations[next(iter(edit.change_annotations))].needs_confirmation
    by_uri = {c.text_document.uri: c.edits for c in edit.document_changes}
    assert set(by_uri) == {app, other}
    for uri, original in ((app, APP), (other, OTHER)):
        updated = apply(original, by_uri[uri])
        assert "area" not in updated and testgen.parse_errors(updated, "python") == 0

    # The uses updated in the editor: their flags clear.
    change(client, app, apply(APP, by_uri[app]), 2)
    await flagged(client, app, lambda d: not d)
    assert len(client.diagnostics[other]) == 2


@pytest.mark.settings(NO_WARM)
async def test_undo_clears_the_diagnostics(project: Path, client: LanguageClient):
    geo = await start(client, project)
    app = (project / "app.py").as_uri()
    change(client, geo, GEO.replace("def area(width, height)", "def area(width, height, unit)"), 2)
    found = await flagged(client, app, lambda d: len(d) == 2)
    assert {d.message for d in found} == {"`area` now requires `unit` (after `height`)"}
    change(client, geo, GEO, 3)
    await flagged(client, app, lambda d: not d)


@pytest.mark.settings(NO_WARM)
async def test_typing_inside_a_definition_fires_nothing_until_it_parses(
    project: Path, client: LanguageClient
):
    geo = await start(client, project)
    app = (project / "app.py").as_uri()
    change(client, geo, GEO.replace("def area(width, height):", "def area(width, height, u"), 2)
    change(client, geo, GEO.replace("def area(width, height)", "def area(width)"), 3)
    found = await flagged(client, app, lambda d: bool(d))
    assert {d.message for d in found} == {"`area` no longer takes `height`"}
    assert lines_of(found) == [4, 4]


@pytest.mark.parametrize(
    ("new", "messages", "lines"),
    [
        # A parameter with a default: every call still fits.
        ("def area(width, height, unit=1)", set(), []),
        (
            "def area(height, width)",
            {"`area` now takes (height, width) in that order"},
            [4, 4],
        ),
        ("def area(width, h)", {"`area`'s parameter `height` is now `h`"}, [4]),
    ],
)
@pytest.mark.settings(NO_WARM)
async def test_each_parameter_change_flags_the_calls_it_breaks(
    project: Path, client: LanguageClient, new: str, messages: set[str], lines: list[int]
):
    geo = await start(client, project)
    app = (project / "app.py").as_uri()
    # A rename first, flagged then undone, so the parameter change is known to have been seen.
    change(client, geo, GEO.replace("def area(", "def size("), 2)
    await flagged(client, app, lambda d: len(d) == 3)
    change(client, geo, GEO.replace("def area(width, height)", new), 3)
    found = await flagged(client, app, lambda d: all("renamed" not in x.message for x in d))
    assert {d.message for d in found} == messages
    assert lines_of(found) == lines


@pytest.mark.settings(NO_WARM)
async def test_async_constructor_and_move(project: Path, client: LanguageClient):
    geo = await start(client, project)
    app = open_doc(client, project, "app.py", APP)
    new = GEO.replace("async def fetch", "def fetch").replace("(self, w)", "(self, w, h)")
    change(client, geo, new, 2)
    found = await flagged(client, app, lambda d: len(d) == 2)
    messages = {d.range.start.line: d.message for d in found}
    assert messages == {
        8: "the constructor of `Box` now requires `h` (after `w`)",
        12: "`fetch` is no longer async",
    }
    actions = await client.text_document_code_action_async(actions_params(app, 12, found))
    fix = next(a for a in actions if a.kind == types.CodeActionKind.QuickFix)
    assert "return fetch(1)" in apply(APP, fix.edit.changes[app])

    # LIMIT moves to consts.py: the import follows.
    consts = open_doc(client, project, "consts.py", "LIMIT = 10\n")
    del consts
    await asyncio.sleep(0.5)  # consts.py is indexed before geo.py loses LIMIT
    change(client, geo, new.replace("LIMIT = 10\n", ""), 3)
    found = await flagged(client, app, lambda d: any("moved" in x.message for x in d))
    moved = next(d for d in found if "moved" in d.message)
    assert moved.message == "`LIMIT` moved to `consts.py`" and moved.range.start.line == 0
    actions = await client.text_document_code_action_async(actions_params(app, 0, [moved]))
    fix = next(a for a in actions if a.kind == types.CodeActionKind.QuickFix)
    fixed = apply(APP, fix.edit.changes[app])
    assert fixed.startswith("from geo import Box, area, fetch\nfrom consts import LIMIT\n")
    assert ast.parse(fixed)


@pytest.mark.settings(NO_WARM)
async def test_a_changed_signature_is_written_by_the_model_and_checked(
    project: Path, client: LanguageClient
):
    """The tiny model's answers are noise: a call it rewrites is offered only when it parses
    and binds to the new signature; otherwise the user is told and nothing changes."""
    geo = await start(client, project)
    app = open_doc(client, project, "app.py", APP)
    change(client, geo, GEO.replace("def area(width, height)", "def area(width, height, unit)"), 2)
    found = await flagged(client, app, lambda d: len(d) == 2)
    actions = await client.text_document_code_action_async(actions_params(app, 4, found))
    fix = next(a for a in actions if a.kind == types.CodeActionKind.QuickFix)
    assert fix.edit is None and fix.title == "Update this call to the new `area`"
    resolved = await client.code_action_resolve_async(fix)
    if resolved.edit is None:
        assert any("could not be rewritten" in m.message for m in client.messages)
    else:
        (edit,) = resolved.edit.changes[app]
        assert testgen.parse_errors(apply(APP, [edit]), "python") == 0
    # The cursor on a flagged line: a rewrite that checks out replaces the old call; else
    # the line gets an ordinary suggestion, inserted at the cursor.
    at = types.Position(4, 4)
    for item in (await inline(client, app, at)).items:
        assert item.range is not None
        if item.range.start != item.range.end:
            replaced = apply(APP, [types.TextEdit(item.range, item.insert_text)])
            assert testgen.parse_errors(replaced, "python") == 0


@pytest.mark.settings(NO_WARM)
async def test_inline_completion_on_a_flagged_line_replaces_the_old_text(
    project: Path, client: LanguageClient
):
    geo = await start(client, project)
    app = open_doc(client, project, "app.py", APP)
    change(client, geo, GEO.replace("def area(", "def surface("), 2)
    await flagged(client, app, lambda d: len(d) == 3)
    result = await inline(client, app, types.Position(4, 30))
    (item,) = result.items
    assert item.insert_text == "surface"
    assert item.range == types.Range(types.Position(4, 11), types.Position(4, 15))


@pytest.mark.settings(NO_WARM)
async def test_rename_and_prepare_rename(project: Path, client: LanguageClient):
    await indexed(client)
    app = open_doc(client, project, "app.py", APP)
    at = types.Position(4, 12)
    prepared = await client.text_document_prepare_rename_async(
        types.PrepareRenameParams(types.TextDocumentIdentifier(app), at)
    )
    assert prepared.placeholder == "area"
    assert prepared.range == types.Range(types.Position(4, 11), types.Position(4, 15))
    edit = await client.text_document_rename_async(
        types.RenameParams(types.TextDocumentIdentifier(app), at, "surface")
    )
    geo, other = (project / "geo.py").as_uri(), (project / "other.py").as_uri()
    assert set(edit.changes) == {app, geo, other}
    for uri, original in ((app, APP), (geo, GEO), (other, OTHER)):
        renamed = apply(original, edit.changes[uri])
        assert "area" not in renamed and "surface" in renamed and ast.parse(renamed)
    nothing = await client.text_document_prepare_rename_async(
        types.PrepareRenameParams(types.TextDocumentIdentifier(app), types.Position(1, 0))
    )
    assert nothing is None
    with pytest.raises(Exception, match="not a valid name"):
        await client.text_document_rename_async(
            types.RenameParams(types.TextDocumentIdentifier(app), at, "no good")
        )


DENIED = """
[defaults]
role = "member"

[prompt]
deny = ["vendored/**"]
"""


@pytest.fixture
def denied_project(workspace: Path) -> Path:
    (workspace / "geo.py").write_text(GEO)
    (workspace / "app.py").write_text(APP)
    (workspace / "vendored").mkdir()
    (workspace / "vendored" / "use.py").write_text(OTHER)
    return workspace


@pytest.mark.policy(DENIED)
async def test_a_denied_path_is_never_flagged_or_edited(
    policy_env: Path, denied_project: Path, governed: LanguageClient
):
    client = governed
    geo = await start(client, denied_project)
    app = (denied_project / "app.py").as_uri()
    denied = (denied_project / "vendored" / "use.py").as_uri()
    edit = await client.text_document_rename_async(
        types.RenameParams(types.TextDocumentIdentifier(geo), types.Position(0, 5), "size")
    )
    assert set(edit.changes) == {geo, app}
    change(client, geo, GEO.replace("def area(", "def surface("), 2)
    await flagged(client, app, lambda d: len(d) == 3)
    assert not client.diagnostics.get(denied)
    actions = await client.text_document_code_action_async(actions_params(geo, 0))
    update = next(a for a in actions if "uses" in a.title)
    resolved = await client.code_action_resolve_async(update)
    assert {c.text_document.uri for c in resolved.edit.document_changes} == {app}


TS = {
    "geometry.ts": (
        "export function area(width: number, height: number): number {\n"
        "  return width * height;\n}\n"
    ),
    "app.ts": (
        'import { area } from "./geometry";\n\nexport const total = area(2, 3) + area(4, 5);\n'
    ),
}
GO = {
    "go.mod": "module example.com/shapes\n\ngo 1.21\n",
    "geometry/geometry.go": (
        "package geometry\n\n"
        "func Area(width, height float64) float64 {\n\treturn width * height\n}\n"
    ),
    "main.go": (
        'package main\n\nimport "example.com/shapes/geometry"\n\n'
        "func main() {\n\tprintln(geometry.Area(2, 3), geometry.Area(4, 5))\n}\n"
    ),
}
# (language, files, defining file, use file, old and new definition line, uses, new name)
OTHER_LANGUAGES = [
    ("typescript", TS, "geometry.ts", "app.ts", "function area(", "area", 3),
    ("go", GO, "geometry/geometry.go", "main.go", "func Area(", "Area", 2),
]


@pytest.fixture
def polyglot(workspace: Path) -> Path:
    for files in (TS, GO):
        for name, text in files.items():
            (workspace / name).parent.mkdir(parents=True, exist_ok=True)
            (workspace / name).write_text(text)
    return workspace


@pytest.mark.parametrize(
    ("language", "files", "defining", "user", "head", "name", "uses"), OTHER_LANGUAGES
)
@pytest.mark.settings(NO_WARM)
async def test_rename_and_a_new_parameter_in_typescript_and_go(
    polyglot: Path,
    client: LanguageClient,
    language: str,
    files: dict[str, str],
    defining: str,
    user: str,
    head: str,
    name: str,
    uses: int,
):
    await indexed(client)
    source = files[defining]
    definition = open_doc(client, polyglot, defining, source)
    use = open_doc(client, polyglot, user, files[user])
    renamed = source.replace(head, head.replace(name, "Surface"))
    change(client, definition, renamed, 2)
    found = await flagged(client, use, lambda d: len(d) == uses)
    assert {d.message for d in found} == {f"`{name}` was renamed to `Surface`"}
    actions = await client.text_document_code_action_async(actions_params(definition, 0))
    update = next(a for a in actions if a.title == f"Update all {uses} uses of `{name}`")
    resolved = await client.code_action_resolve_async(update)
    (edits,) = [c.edits for c in resolved.edit.document_changes if c.text_document.uri == use]
    updated = apply(files[user], edits)
    assert name not in updated.replace("example.com", "") and "Surface" in updated
    assert testgen.parse_errors(updated, language) == 0

    # A new parameter (after undoing the rename): the calls, not the import, are flagged.
    change(client, definition, source, 3)
    await flagged(client, use, lambda d: not d)
    param = "unit: string" if language == "typescript" else "unit string"
    wider = source.replace("height: number)", f"height: number, {param})").replace(
        "height float64)", f"height float64, {param})"
    )
    change(client, definition, wider, 4)
    found = await flagged(client, use, lambda d: bool(d))
    assert {d.message for d in found} == {f"`{name}` now requires `unit` (after `height`)"}
    assert len(found) == 2


REEXPORT = 'export { area } from "./geometry";\nexport { area as size } from "./geometry";\n'


@pytest.fixture
def reexporting(polyglot: Path) -> Path:
    """A package index that re-exports `area` (written before the server starts)."""
    (polyglot / "shapes.ts").write_text(REEXPORT)
    return polyglot


@pytest.mark.settings(NO_WARM)
async def test_a_typescript_rename_follows_into_re_exports(
    reexporting: Path, client: LanguageClient
):
    await indexed(client)
    definition = open_doc(client, reexporting, "geometry.ts", TS["geometry.ts"])
    shapes = open_doc(client, reexporting, "shapes.ts", REEXPORT)
    change(client, definition, TS["geometry.ts"].replace("function area(", "function surface("), 2)
    found = await flagged(client, shapes, lambda d: len(d) == 2)
    assert sorted((d.range.start.line, d.range.start.character) for d in found) == [(0, 9), (1, 9)]
    actions = await client.text_document_code_action_async(actions_params(shapes, 1))
    fix = next(a for a in actions if a.kind == types.CodeActionKind.QuickFix)
    (edits,) = fix.edit.changes.values()
    updated = apply(REEXPORT, edits)
    assert updated == REEXPORT.replace("{ area as", "{ surface as")  # this place only
    assert testgen.parse_errors(updated, "typescript") == 0
