"""The server over stdio, driven like an editor drives it, on the tiny model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled
from pytest_lsp import LanguageClient

from tests.tiny_gguf import write_not_a_gguf

PYTHON = (
    "def area(width, height):\n    return width * height\n\n\ndef perimeter(w, h):\n    return \n"
)
CURSOR = types.Position(line=5, character=11)  # after "return "


def open_doc(client: LanguageClient, root: Path, name: str, text: str, version: int = 1) -> str:
    uri = (root / name).as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", version, text))
    )
    return uri


def type_at(client: LanguageClient, uri: str, position: types.Position, text: str, version: int):
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [types.TextDocumentContentChangePartial(types.Range(position, position), text)],
        )
    )


def inline_params(uri: str, position: types.Position) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic),
        text_document=types.TextDocumentIdentifier(uri),
        position=position,
    )


async def inline(client: LanguageClient, uri: str, position: types.Position):
    return await client.text_document_inline_completion_async(inline_params(uri, position))


async def stats(client: LanguageClient) -> dict:
    return plain(await client.protocol.send_request_async("codeagent/stats", {}))


async def model_loaded(client: LanguageClient) -> None:
    """Wait until the model worker has loaded the model (about a second: a new process)."""
    for _ in range(600):
        if (await stats(client))["model"] is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the model never loaded")


def plain(value):
    """pygls hands custom results over as namedtuples: back to dicts and lists."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


async def test_capabilities_advertise_completion_and_incremental_sync(client: LanguageClient):
    caps = client.initialize_result.capabilities  # type: ignore[attr-defined]
    assert caps.inline_completion_provider
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.text_document_sync.open_close


async def test_inline_completion_inserts_at_the_cursor(client: LanguageClient, workspace: Path):
    uri = open_doc(client, workspace, "shapes.py", PYTHON)
    result = await inline(client, uri, CURSOR)
    assert len(result.items) == 1
    item = result.items[0]
    assert item.insert_text.strip()
    assert "\n" not in item.insert_text  # mid-statement: one line
    assert item.range == types.Range(CURSOR, CURSOR)
    record = (await stats(client))["records"][-1]
    assert record["outcome"] == "ok"
    assert record["promptTokens"] > 20
    # Cold, or warmed in part when the document was opened: every prompt token is accounted.
    assert record["reusedTokens"] + record["evaluatedTokens"] == record["promptTokens"]


async def test_classic_completion_edits_from_the_word_start(
    client: LanguageClient, workspace: Path
):
    text = "total = 0\nfor value in range(3):\n    total += val"
    uri = open_doc(client, workspace, "loop.py", text)
    position = types.Position(line=2, character=16)
    result = await client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(uri), position)
    )
    assert result.is_incomplete
    (item,) = result.items
    edit = item.text_edit
    assert edit.range == types.Range(types.Position(2, 13), position)
    assert edit.new_text.startswith("val") and len(edit.new_text) > 3
    assert item.filter_text == edit.new_text


async def test_incremental_edits_reach_the_prompt(client: LanguageClient, workspace: Path):
    uri = open_doc(client, workspace, "edit.py", "x = 1\n")
    type_at(client, uri, types.Position(1, 0), "name = sp", 2)
    result = await client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(uri), types.Position(1, 9))
    )
    assert result.items[0].text_edit.new_text.startswith("sp")


async def test_returning_to_a_document_evaluates_only_what_changed(
    client: LanguageClient, workspace: Path
):
    body = "".join(f"def helper_{i}(value):\n    return value + {i}\n\n" for i in range(30))
    first = open_doc(client, workspace, "first.py", body + "result = \n" + body)
    second = open_doc(client, workspace, "second.py", body.replace("helper", "other") + "x = \n")
    cursor = types.Position(line=90, character=9)
    await inline(client, first, cursor)
    await inline(client, second, types.Position(line=90, character=4))
    type_at(client, first, cursor, "he", 2)
    await inline(client, first, types.Position(line=90, character=11))
    records = (await stats(client))["records"]
    back = records[-1]
    assert back["outcome"] == "ok"
    assert back["promptTokens"] > 400
    assert back["evaluatedTokens"] <= 0.1 * back["promptTokens"]
    assert back["reusedTokens"] + back["evaluatedTokens"] == back["promptTokens"]
    slots = (await stats(client))["slots"]
    assert {s["document"].split("#")[0] for s in slots} == {"first.py", "second.py"}


# 1024 is the most maxTokens may be: a long generation to interrupt.
@pytest.mark.settings({"completion": {"maxTokens": 1024, "reuseSuggestion": False, "warm": False}})
async def test_cancel_request_stops_generation(client: LanguageClient, workspace: Path):
    uri = open_doc(client, workspace, "long.py", PYTHON)
    await model_loaded(client)  # cancel generation, not the wait for the model
    # pygls's client does not send $/cancelRequest itself when a request's task is cancelled.
    pending = client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, CURSOR), msg_id="long-one"
    )
    await asyncio.sleep(0.3)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="long-one"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wrap_future(pending)
    for _ in range(50):  # the engine thread records the request once it has stopped
        records = (await stats(client))["records"]
        if records:
            break
        await asyncio.sleep(0.1)
    assert records[-1]["outcome"] == "cancelled"
    assert records[-1]["generatedTokens"] < 1024
    assert (await inline(client, uri, CURSOR)).items  # and it keeps serving


# 1024 is the most maxTokens may be: a long generation to interrupt.
@pytest.mark.settings({"completion": {"maxTokens": 1024, "reuseSuggestion": False, "warm": False}})
async def test_newest_request_for_a_document_supersedes_older(
    client: LanguageClient, workspace: Path
):
    uri = open_doc(client, workspace, "race.py", PYTHON)
    await model_loaded(client)
    older = asyncio.create_task(inline(client, uri, CURSOR))
    await asyncio.sleep(0.3)
    newer = await inline(client, uri, CURSOR)
    assert newer.items
    assert not (await older).items
    outcomes = [r["outcome"] for r in (await stats(client))["records"]]
    assert outcomes[0] == "superseded"
    assert outcomes[-1] == "ok"


async def test_out_of_range_position_is_an_error_and_the_server_goes_on(
    client: LanguageClient, workspace: Path
):
    uri = open_doc(client, workspace, "short.py", "x = 1\n")
    with pytest.raises(JsonRpcInvalidParams, match="outside the document"):
        await inline(client, uri, types.Position(line=40, character=0))
    far_right = await inline(client, uri, types.Position(line=0, character=500))
    end_of_line = types.Position(line=0, character=len("x = 1"))  # past the end = the line end
    assert far_right.items[0].range == types.Range(end_of_line, end_of_line)


async def test_unopened_document_is_refused(client: LanguageClient, workspace: Path):
    with pytest.raises(JsonRpcInvalidParams, match="not open"):
        await inline(client, "file:///etc/passwd", types.Position(0, 0))


async def test_positions_follow_the_negotiated_encoding(client: LanguageClient, workspace: Path):
    line = 'label = "日本語 🎉"; total = su'
    uri = open_doc(client, workspace, "unicode.py", line)
    encoding = client.initialize_result.capabilities.position_encoding  # type: ignore[attr-defined]
    units = {
        "utf-8": lambda s: len(s.encode()),
        "utf-16": lambda s: len(s.encode("utf-16-le")) // 2,
        "utf-32": len,
    }[encoding]
    end = types.Position(0, units(line))
    result = await client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(uri), end)
    )
    (item,) = result.items
    assert item.text_edit.range.start == types.Position(0, units(line[:-2]))
    assert item.text_edit.new_text.startswith("su")


@pytest.mark.settings({"model": "qwen2.5-coder-0.5b", "modelsDir": "/nonexistent/models"})
async def test_missing_model_is_explained_once_and_other_features_work(
    client: LanguageClient, workspace: Path
):
    uri = open_doc(client, workspace, "a.py", PYTHON)
    assert not (await inline(client, uri, CURSOR)).items
    assert not (await inline(client, uri, CURSOR)).items
    problems = [m.message for m in client.messages if m.type == types.MessageType.Error]
    assert len(problems) == 1
    assert "codeagent-lsp model pull qwen2.5-coder-0.5b" in problems[0]
    assert (await stats(client))["problem"]


@pytest.mark.settings({"completion": {"maxTokens": "lots", "temperature": -1}, "colour": 1})
async def test_bad_settings_are_reported_and_defaults_kept(client: LanguageClient, workspace: Path):
    warnings = " ".join(m.message for m in client.messages if m.type == types.MessageType.Warning)
    assert "codeagent.completion.maxTokens" in warnings
    assert "codeagent.completion.temperature" in warnings
    assert "codeagent.colour" in warnings
    uri = open_doc(client, workspace, "b.py", PYTHON)
    assert (await inline(client, uri, CURSOR)).items


@pytest.mark.settings({"model": "no-such-model"})
async def test_unknown_model_name_lists_the_known_ones(client: LanguageClient, workspace: Path):
    uri = open_doc(client, workspace, "d.py", PYTHON)
    assert not (await inline(client, uri, CURSOR)).items
    (problem,) = [m.message for m in client.messages if m.type == types.MessageType.Error]
    assert "no-such-model" in problem and "qwen2.5-coder-0.5b" in problem


async def test_did_change_configuration_switches_to_an_invalid_model(
    client: LanguageClient, workspace: Path, tmp_path: Path
):
    bogus = write_not_a_gguf(tmp_path / "bogus.gguf")
    uri = open_doc(client, workspace, "c.py", PYTHON)
    assert (await inline(client, uri, CURSOR)).items
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"codeagent": {"model": str(bogus)}})
    )
    assert not (await inline(client, uri, CURSOR)).items
    errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
    assert errors and "not a GGUF" in errors[0]
