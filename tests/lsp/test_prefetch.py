"""Prefetch after an accept, on the tiny GGUF: once a suggestion is accepted (typed whole, or
the editor's codeagent.accepted command), the next one is computed in the background and the
request at that position answers from it; a keystroke elsewhere or a real request stops it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from codeagent_lsp.assistant import Assistant
from codeagent_lsp.settings import Settings, merge
from tests.lsp.test_server import CURSOR, PYTHON, inline, model_loaded, open_doc, stats, type_at

NO_WARM = {"completion": {"warm": False}}


def after(client: LanguageClient, position: types.Position, text: str) -> types.Position:
    """The position past `text` typed at `position` (one line), in the negotiated encoding."""
    encoding = client.initialize_result.capabilities.position_encoding  # type: ignore[attr-defined]
    codec = {"utf-8": "utf-8", "utf-32": "utf-32-le"}.get(str(encoding or ""), "utf-16-le")
    width = {"utf-8": 1, "utf-32-le": 4}.get(codec, 2)
    assert "\n" not in text
    return types.Position(position.line, position.character + len(text.encode(codec)) // width)


async def records_after(client: LanguageClient, count: int) -> list[dict]:
    """The records once there are `count` of them (a prefetch records when it ends)."""
    for _ in range(600):
        records = (await stats(client))["records"]
        if len(records) >= count:
            return records
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} records: {records}")


async def shown_at_cursor(client: LanguageClient, uri: str) -> str:
    result = await inline(client, uri, CURSOR)
    assert result.items, "the tiny model suggested nothing here"
    return result.items[0].insert_text


async def on_demand(client: LanguageClient, uri: str, text: str, where: types.Position) -> str:
    """The suggestion at `where` computed afresh: the document closed and opened again."""
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri))
    )
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 9, text))
    )
    result = await inline(client, uri, where)
    assert (await stats(client))["records"][-1]["outcome"] == "ok"
    return result.items[0].insert_text if result.items else ""


def accepted_text(shown: str) -> str:
    lines = PYTHON.split("\n")
    lines[CURSOR.line] = lines[CURSOR.line][: CURSOR.character] + shown
    return "\n".join(lines)


@pytest.mark.settings(NO_WARM)
async def test_typing_the_whole_suggestion_prefetches_the_next(
    client: LanguageClient, workspace: Path
):
    await model_loaded(client)
    uri = open_doc(client, workspace, "typed.py", PYTHON)
    shown = await shown_at_cursor(client, uri)
    half = len(shown) // 2
    type_at(client, uri, CURSOR, shown[:half], 2)
    middle = after(client, CURSOR, shown[:half])
    assert (await inline(client, uri, middle)).items[0].insert_text == shown[half:]
    type_at(client, uri, middle, shown[half:], 3)  # the last keystroke completes it
    ok, typeahead, prefetch = await records_after(client, 3)
    assert [ok["outcome"], typeahead["outcome"], prefetch["outcome"]] == ["ok", "typeahead", "ok"]
    accepted_at = after(client, CURSOR, shown)
    answer = await inline(client, uri, accepted_at)
    served = (await stats(client))["records"][-1]
    assert served["outcome"] == "prefetched"
    assert served["evaluatedTokens"] == served["generatedTokens"] == 0
    assert served["promptTokens"] == served["reusedTokens"] == prefetch["promptTokens"]
    text = answer.items[0].insert_text if answer.items else ""
    assert text == await on_demand(client, uri, accepted_text(shown), accepted_at)


@pytest.mark.settings(NO_WARM)
async def test_the_accept_command_prefetches_even_before_the_change(
    client: LanguageClient, workspace: Path
):
    caps = client.initialize_result.capabilities  # type: ignore[attr-defined]
    assert "codeagent.accepted" in caps.execute_command_provider.commands
    await model_loaded(client)
    uri = open_doc(client, workspace, "command.py", PYTHON)
    (item,) = (await inline(client, uri, CURSOR)).items
    assert (item.command.command, list(item.command.arguments)) == ("codeagent.accepted", [uri])
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(item.command.command, item.command.arguments)
    )
    type_at(client, uri, CURSOR, item.insert_text, 2)  # the editor's change, after its command
    _, prefetch = await records_after(client, 2)
    assert prefetch["outcome"] == "ok"
    await inline(client, uri, after(client, CURSOR, item.insert_text))
    outcomes = [r["outcome"] for r in (await stats(client))["records"]]
    assert outcomes == ["ok", "ok", "prefetched"]  # the change kept the running prefetch


# A long prefetch (1024 is the most maxTokens may be), for the keystroke to stop.
@pytest.mark.settings({"completion": {"warm": False, "maxTokens": 1024}})
async def test_a_keystroke_elsewhere_stops_the_prefetch(client: LanguageClient, workspace: Path):
    await model_loaded(client)
    uri = open_doc(client, workspace, "stopped.py", PYTHON)
    other = open_doc(client, workspace, "other.py", "x = 1\n")
    shown = await shown_at_cursor(client, uri)
    type_at(client, uri, CURSOR, shown, 2)
    type_at(client, other, types.Position(1, 0), "y", 2)
    await inline(client, uri, after(client, CURSOR, shown))
    records = (await stats(client))["records"]
    assert records[-1]["outcome"] == "ok"  # computed for the request: no prefetched answer
    assert all(r["outcome"] in ("ok", "cancelled") for r in records)


@pytest.mark.settings({"completion": {"warm": False, "prefetch": False}})
async def test_prefetching_can_be_turned_off(client: LanguageClient, workspace: Path):
    await model_loaded(client)
    uri = open_doc(client, workspace, "off.py", PYTHON)
    shown = await shown_at_cursor(client, uri)
    type_at(client, uri, CURSOR, shown, 2)
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams("codeagent.accepted", [uri])
    )
    await inline(client, uri, after(client, CURSOR, shown))
    assert [r["outcome"] for r in (await stats(client))["records"]] == ["ok", "ok"]


def test_a_request_joins_the_running_prefetch_at_its_position(tiny_model: Path) -> None:
    """Whether the prefetch still runs or is done, the request takes its answer: the prefetch
    is never superseded (its outcome stays ok), and a request elsewhere is not served by it."""
    options = {"model": str(tiny_model), "engine": {"threads": 1}, "completion": {"maxTokens": 64}}
    settings, _ = merge(Settings(), options)
    assistant = Assistant(settings)
    text, offset = accepted_text("width * h"), PYTHON.index("return \n") + len("return width * h")

    async def session() -> None:
        prefetch = asyncio.create_task(assistant.prefetch("a.py", text, offset))
        for _ in range(60_000):  # its prompt is built first, then it is kept
            if assistant.prefetching("a.py", text, offset):
                break
            assert not prefetch.done(), prefetch
            await asyncio.sleep(0.001)
        served = await assistant.complete("a.py", text, offset)
        assert served.record.outcome == "prefetched"
        assert (await prefetch).outcome == "ok"
        assert not assistant.prefetching("a.py", text, offset)  # used up
        again = await assistant.complete("a.py", text, offset - 1)
        assert again.record.outcome == "ok"

    try:
        asyncio.run(session())
    finally:
        assistant.close()
