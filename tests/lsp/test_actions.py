"""Code actions over stdio: listed at once without the model, computed on resolve."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types
from pygls import uris
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled
from pytest_lsp import LanguageClient

from tests.lsp.test_server import model_loaded, open_doc, stats

SOURCE = "def area(width, height):\n    return width * height\n\n\ndef broken(x):\n    return x +\n"


def actions_params(uri: str, line: int, diagnostics=()) -> types.CodeActionParams:
    here = types.Range(types.Position(line, 0), types.Position(line, 0))
    return types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri),
        range=here,
        context=types.CodeActionContext(diagnostics=list(diagnostics)),
    )


async def test_actions_are_listed_without_a_model_call(client: LanguageClient, workspace: Path):
    uri = open_doc(client, workspace, "shapes.py", SOURCE)
    problem = types.Diagnostic(
        range=types.Range(types.Position(5, 4), types.Position(5, 14)),
        message="Expected expression",
        source="pyright",
    )
    actions = await client.text_document_code_action_async(actions_params(uri, 5, [problem]))
    titles = [a.title for a in actions]
    assert titles == [
        "Explain this code",
        "Add docstring to broken",
        "Generate tests for broken",
        "Fix: Expected expression",
    ]
    assert all(a.edit is None for a in actions)
    assert (await stats(client))["records"] == []  # nothing ran on the engine
    declared = client.initialize_result.capabilities.code_action_provider.code_action_kinds  # type: ignore[attr-defined]
    assert {a.kind for a in actions} <= set(declared)  # editors show only declared kinds


async def test_add_docstring_resolves_to_an_edit_that_parses(
    client: LanguageClient, workspace: Path
):
    uri = open_doc(client, workspace, "doc.py", SOURCE)
    actions = await client.text_document_code_action_async(actions_params(uri, 1))
    docstring = next(a for a in actions if a.title == "Add docstring to area")
    resolved = await client.code_action_resolve_async(docstring)
    (edit,) = resolved.edit.changes[uri]
    assert edit.range.start == types.Position(1, 0) == edit.range.end
    assert edit.new_text.startswith('    """') and edit.new_text.endswith('    """\n')
    record = (await stats(client))["records"][-1]
    assert record["outcome"] == "ok" and record["generatedTokens"] > 0


async def test_explain_opens_a_markdown_document(client: LanguageClient, workspace: Path):
    uri = open_doc(client, workspace, "explain.py", SOURCE)
    actions = await client.text_document_code_action_async(actions_params(uri, 1))
    explain = next(a for a in actions if a.title == "Explain this code")
    await client.code_action_resolve_async(explain)
    window = client.capabilities.window  # type: ignore[union-attr]
    if window and window.show_document and window.show_document.support:
        (shown,) = client.shown_documents
        text = Path(uris.to_fs_path(shown.uri)).read_text()
        assert text.startswith("# area\n\n") and len(text) > len("# area\n\n")
    else:
        assert any(m.message.startswith("# area") for m in client.messages)


async def test_fix_without_a_parsing_answer_offers_no_edit(client: LanguageClient, workspace: Path):
    """The tiny model answers noise with no code block: nothing that parses, so no edit."""
    uri = open_doc(client, workspace, "fix.py", SOURCE)
    problem = types.Diagnostic(
        range=types.Range(types.Position(5, 4), types.Position(5, 14)),
        message="Expected expression",
    )
    actions = await client.text_document_code_action_async(actions_params(uri, 5, [problem]))
    fix = next(a for a in actions if a.title.startswith("Fix:"))
    resolved = await client.code_action_resolve_async(fix)
    assert resolved.edit is None


async def test_generated_tests_go_to_the_projects_test_folder(
    client: LanguageClient, workspace: Path
):
    """With the tiny model the answer has no code block: no edit. The plumbing (listing,
    resolving, choosing the file) runs for real either way."""
    (workspace / "tests").mkdir()
    uri = open_doc(client, workspace, "calc.py", SOURCE)
    actions = await client.text_document_code_action_async(actions_params(uri, 1))
    generate = next(a for a in actions if a.title == "Generate tests for area")
    assert generate.kind == types.CodeActionKind.Source
    resolved = await client.code_action_resolve_async(generate)
    assert resolved.edit is None
    assert (await stats(client))["records"][-1]["generatedTokens"] > 0


# No warm-up: the records are the action's alone.
@pytest.mark.settings({"actions": {"maxTokens": 4000}, "completion": {"warm": False}})
async def test_cancelling_resolve_stops_the_model(client: LanguageClient, workspace: Path):
    uri = open_doc(client, workspace, "slow.py", SOURCE)
    await model_loaded(client)  # cancel generation, not the wait for the model
    actions = await client.text_document_code_action_async(actions_params(uri, 1))
    explain = next(a for a in actions if a.title == "Explain this code")
    pending = client.protocol.send_request(types.CODE_ACTION_RESOLVE, explain, msg_id="explain")
    await asyncio.sleep(0.3)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="explain"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wrap_future(pending)
    for _ in range(50):
        records = (await stats(client))["records"]
        if records:
            break
        await asyncio.sleep(0.1)
    assert records[-1]["outcome"] == "cancelled"
    assert records[-1]["generatedTokens"] < 4000


async def test_actions_on_a_file_with_syntax_errors(client: LanguageClient, workspace: Path):
    uri = open_doc(client, workspace, "mess.py", "def ok(x):\n    return (x\n\nclass Broken(:\n")
    actions = await client.text_document_code_action_async(actions_params(uri, 1))
    assert actions[0].title == "Explain this code"


async def test_actions_on_a_file_outside_the_workspace_are_refused(
    client: LanguageClient, workspace: Path
):
    outside = workspace.parent / "elsewhere"
    outside.mkdir()
    uri = open_doc(client, outside, "stray.py", SOURCE)
    with pytest.raises(JsonRpcInvalidParams, match="outside the workspace"):
        await client.text_document_code_action_async(actions_params(uri, 1))
    inside = open_doc(client, workspace, "fine.py", SOURCE)
    assert await client.text_document_code_action_async(actions_params(inside, 1))


async def test_explain_takes_the_selection_when_there_is_one(
    client: LanguageClient, workspace: Path
):
    uri = open_doc(client, workspace, "sel.py", SOURCE)
    params = actions_params(uri, 0)
    params.range = types.Range(types.Position(0, 0), types.Position(5, 0))
    actions = await client.text_document_code_action_async(params)
    await client.code_action_resolve_async(actions[0])
    window = client.capabilities.window  # type: ignore[union-attr]
    if window and window.show_document and window.show_document.support:
        text = Path(uris.to_fs_path(client.shown_documents[-1].uri)).read_text()
        assert text.startswith("# sel.py:1\n")  # a selection, not the enclosing function


GO_SOURCE = "package calc\n\n// Add adds.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n"


async def test_generate_tests_is_offered_for_every_codegraph_language(
    client: LanguageClient, workspace: Path
):
    sources = {
        "calc.go": GO_SOURCE,
        "calc.ts": "export function add(a: number, b: number): number {\n  return a + b;\n}\n",
        "calc.rs": "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n",
        "Calc.java": "class Calc {\n    static int add(int a, int b) {\n        return a + b;\n"
        "    }\n}\n",
        "calc.c": "int add(int a, int b) {\n    return a + b;\n}\n",
    }
    for name, text in sources.items():
        uri = open_doc(client, workspace, name, text)
        body = next(i for i, row in enumerate(text.split("\n")) if "a + b" in row)
        actions = await client.text_document_code_action_async(actions_params(uri, body))
        assert any(a.title.startswith("Generate tests for ") for a in actions), name


async def test_generated_tests_that_do_not_parse_are_reported_not_applied(
    client: LanguageClient, workspace: Path
):
    """The tiny model's noise holds no Go test function: the user is told, nothing changes."""
    uri = open_doc(client, workspace, "calc.go", GO_SOURCE)
    actions = await client.text_document_code_action_async(actions_params(uri, 4))
    generate = next(a for a in actions if a.title == "Generate tests for Add")
    resolved = await client.code_action_resolve_async(generate)
    assert resolved.edit is None
    assert any("did not parse" in m.message for m in client.messages)
    assert not (workspace / "calc_test.go").exists()
