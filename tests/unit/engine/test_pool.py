"""A node's pool of loaded models, on the tiny GGUF: borrowers of one (model file, engine
settings) share one engine (one worker process), each with slots and records of its own, and
the last one to leave frees it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeagent_lsp.assistant import Assistant
from codeagent_lsp.engine.backend import Request
from codeagent_lsp.engine.llama import EngineError
from codeagent_lsp.engine.models import OpenModel, open_model
from codeagent_lsp.engine.pool import BackendPool
from codeagent_lsp.settings import EngineSettings, Settings, merge

SETTINGS = EngineSettings(threads=1, contextSize=512, slots=2)
REQUEST = Request(key="file:///project/same.py", segments=["def same():"], max_tokens=4)


@pytest.fixture
def model(tiny_model: Path) -> Iterator[OpenModel]:
    """The tiny model opened and checked, as the server hands it to the pool."""
    opened = open_model(tiny_model)
    yield opened
    opened.close()


def engines_running() -> int:
    """Model worker processes this process started and has not yet stopped."""
    return workers_of(os.getpid())


def workers_of(pid: int) -> int:
    """Model worker processes of the process `pid` (its children running the worker module)."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
        count += parent == pid and b"codeagent_lsp.engine.worker" in cmdline
    return count


async def test_borrowers_share_one_engine_until_the_last_one_leaves(model: OpenModel) -> None:
    engine_threads = engines_running()
    pool = BackendPool()
    alice, bob = pool.borrow(model, SETTINGS), pool.borrow(model, SETTINGS)
    assert engines_running() == engine_threads + 1
    assert pool.loads == 1
    assert alice.stats()["shared"] == {"engine": 1, "clients": 2, "loads": 1}

    # Both submitted before either runs: the same key would make the second supersede the first.
    mine, theirs = await asyncio.gather(alice.generate(REQUEST), bob.generate(REQUEST))
    assert mine.record.outcome == theirs.record.outcome == "ok"
    assert mine.record.slot != theirs.record.slot
    for borrower in (alice, bob):
        assert [r["outcome"] for r in borrower.stats()["records"]] == ["ok"]
        assert len(borrower.stats()["slots"]) == 1

    alice.close()
    alice.close()  # closing twice gives back once
    assert (await bob.generate(REQUEST)).record.outcome == "ok"
    assert bob.stats()["shared"] == {"engine": 1, "clients": 1, "loads": 1}
    bob.close()
    assert engines_running() == engine_threads  # the last one out freed the model
    with pytest.raises(EngineError, match="closed"):
        await bob.generate(REQUEST)

    carol = pool.borrow(model, SETTINGS)  # nobody held it: loaded again
    assert carol.stats()["shared"] == {"engine": 2, "clients": 1, "loads": 2}
    carol.close()


def test_other_engine_settings_get_another_engine(model: OpenModel) -> None:
    pool = BackendPool()
    alice = pool.borrow(model, SETTINGS)
    bob = pool.borrow(model, EngineSettings(threads=1, contextSize=256, slots=2))
    assert (alice.stats()["shared"]["engine"], bob.stats()["shared"]["engine"]) == (1, 2)
    alice.close()
    bob.close()


def test_a_model_that_fails_to_load_is_tried_again_by_the_next_borrower(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    pool = BackendPool()
    for loads in (1, 2):  # opened as is: this is llama.cpp's refusal, not the header check's
        opened = OpenModel(os.open(broken, os.O_RDONLY), broken, "0" * 64)
        with pytest.raises(EngineError):
            pool.borrow(opened, SETTINGS)
        opened.close()
        assert pool.loads == loads


async def test_a_client_that_leaves_while_its_model_loads_gives_it_back(tiny_model: Path) -> None:
    pool = BackendPool()
    settings, errors = merge(Settings(), {"model": str(tiny_model), "engine": {"threads": 1}})
    assert not errors
    leaving = Assistant(settings, backends=pool)
    loading = asyncio.create_task(leaving.load())
    await asyncio.sleep(0)  # the load has started, and cannot have finished
    leaving.close()
    await loading
    staying = Assistant(settings, backends=pool)
    await staying.load()
    assert staying.stats()["shared"] == {"engine": 2, "clients": 1, "loads": 2}
    staying.close()
