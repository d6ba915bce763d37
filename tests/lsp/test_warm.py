"""Warm-ups on the tiny GGUF: a document's prompt is evaluated when it is opened or focused, the
first suggestion reuses it, and any real request overtakes a warm-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from codeagent_lsp.engine.engine import GenerationJob
from codeagent_lsp.settings import EngineSettings
from tests.lsp.test_server import PYTHON, inline, model_loaded, open_doc, stats
from tests.unit.engine.test_engine import CODE

WAIT = 60.0


async def warm_record(client: LanguageClient) -> dict:
    """The warm-up's record: no token generated, nothing reused from an earlier request."""
    for _ in range(600):
        records = (await stats(client))["records"]
        if records:
            assert len(records) == 1
            return records[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no warm-up ran")


def end_of(text: str) -> types.Position:
    lines = text.split("\n")
    return types.Position(len(lines) - 1, len(lines[-1]))


async def test_opening_a_document_warms_its_prompt(client: LanguageClient, workspace: Path):
    await model_loaded(client)
    uri = open_doc(client, workspace, "warm.py", PYTHON)
    warm = await warm_record(client)
    assert (warm["outcome"], warm["generatedTokens"]) == ("ok", 0)
    assert warm["evaluatedTokens"] == warm["promptTokens"] > 20
    assert (await inline(client, uri, end_of(PYTHON))).items
    first = (await stats(client))["records"][-1]
    assert first["outcome"] == "ok" and first["evaluatedTokens"] == 1  # all but the last token


async def test_focus_computes_the_suggestion_at_the_cursor_the_client_reports(
    client: LanguageClient, workspace: Path
):
    await model_loaded(client)
    uri = open_doc(client, workspace, "focus.py", PYTHON)
    await warm_record(client)
    cursor = types.Position(3, 8)
    client.protocol.notify(
        "codeagent/didFocus",
        {"textDocument": {"uri": uri}, "position": {"line": 3, "character": 8}},
    )
    for _ in range(600):
        if len((await stats(client))["records"]) == 2:
            break
        await asyncio.sleep(0.05)
    assert (await inline(client, uri, cursor)) is not None
    opened, focused, served = (await stats(client))["records"]
    assert opened["generatedTokens"] == 0  # didOpen without a cursor: the prompt only
    assert focused["outcome"] == "ok" and focused["reusedTokens"] > 0  # on the open's KV
    assert (served["outcome"], served["evaluatedTokens"]) == ("prefetched", 0)


@pytest.mark.settings({"completion": {"warm": False}})
async def test_warming_can_be_turned_off(client: LanguageClient, workspace: Path):
    await model_loaded(client)
    open_doc(client, workspace, "cold.py", PYTHON)
    client.protocol.notify("codeagent/didFocus", {"textDocument": {"uri": "file:///nowhere.py"}})
    await asyncio.sleep(1.0)  # a warm-up of the tiny model takes milliseconds
    assert (await stats(client))["records"] == []


def test_a_warm_up_never_supersedes_a_request(tiny_model: Path) -> None:
    from codeagent_lsp.engine.engine import Engine

    engine = Engine(tiny_model, EngineSettings(threads=1, slots=2, contextSize=4096))
    try:
        engine.wait_loaded(timeout=WAIT)
        prompt = engine.tokenize(CODE)
        busy = GenerationJob("busy.py", prompt, max_tokens=200)
        real = GenerationJob("a.py", prompt, max_tokens=3)
        late_warm = GenerationJob("a.py", prompt, max_tokens=0, background=True)
        for job in (busy, real, late_warm):  # the warm-up arrives after the request it loses to
            engine.submit(job)
        assert late_warm.future.result(timeout=WAIT).record.outcome == "preempted"
        assert real.future.result(timeout=WAIT).record.outcome == "ok"
    finally:
        engine.close()


def test_a_real_request_preempts_a_warm_up(tiny_model: Path) -> None:
    from codeagent_lsp.engine.engine import Engine

    engine = Engine(tiny_model, EngineSettings(threads=1, slots=2, contextSize=4096, batchSize=16))
    try:
        engine.wait_loaded(timeout=WAIT)
        prompt = (engine.tokenize(CODE) * 40)[:3000]
        warm = GenerationJob("big.py", prompt, max_tokens=0, background=True)
        engine.submit(warm)
        real = GenerationJob("other.py", engine.tokenize(CODE), max_tokens=3)
        engine.submit(real)
        assert real.future.result(timeout=WAIT).record.outcome == "ok"
        record = warm.future.result(timeout=WAIT).record
        assert record.outcome == "preempted" and record.evaluated_tokens < len(prompt)
    finally:
        engine.close()
