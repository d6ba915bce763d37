"""`codeagent-lsp bench latency --scenario cold-open`: the first suggestion in each document.

Ten files are opened one after another with four slots (so six are evicted), the server is
restarted, and the first three files are opened again. In each document the user "thinks" for
`think_ms` after opening it, then asks for a suggestion at the line the typing bench types; the
wall time of that first suggestion is measured. The same session runs under four conditions on
the same model, each with a fresh park folder: none (the behaviour before warm-ups and parked
slots), warm-ups alone, parked slots alone, and both.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from codeagent_lsp.assistant import Assistant
from codeagent_lsp.bench.latency import TypingDocument, default_files
from codeagent_lsp.settings import Settings

DEFAULT_FILES = (
    "asyncio/base_events.py",
    "email/message.py",
    "json/encoder.py",
    "argparse.py",
    "logging/__init__.py",
    "http/client.py",
    "pathlib.py",
    "subprocess.py",
    "tarfile.py",
    "unittest/case.py",
)
SLOTS = 4
REOPENED = 3
CONDITIONS = {
    "none": (False, False),
    "warm": (True, False),
    "park": (False, True),
    "all": (True, True),
}
"""(warm-ups, parked slots) per condition."""


async def run_cold_open_bench(
    settings: Settings,
    files: list[Path] | None,
    think_ms: float,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """First-suggestion latency per condition; keys `cold_first_p50_ms` (none),
    `warm_first_p50_ms`, `parked_first_p50_ms`, `all_first_p50_ms` and `ratio_first` (all /
    none), in milliseconds of wall time."""
    say = progress or (lambda _m: None)
    documents = [TypingDocument.from_file(p) for p in files or default_files(DEFAULT_FILES)]
    runs = {}
    for name, (warm, park) in CONDITIONS.items():
        say(f"condition {name}: warm-ups {_on(warm)}, parking {_on(park)}")
        runs[name] = await _condition(settings, documents, warm, park, think_ms, say)
    return _summary(runs, len(documents), think_ms)


async def _condition(
    settings: Settings,
    documents: list[TypingDocument],
    warm: bool,
    park: bool,
    think_ms: float,
    say: Callable[[str], None],
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        engine = dataclasses.replace(settings.engine, slots=SLOTS, parkSlots=park, parkDir=folder)
        chosen = dataclasses.replace(settings, engine=engine)
        first, restored = [], []
        for round_ in (documents, documents[:REOPENED]):  # a restart between the two
            assistant = Assistant(chosen)
            try:
                await assistant.load()
                for doc in round_:
                    ms, from_disk = await _first_suggestion(assistant, doc, warm, think_ms)
                    first.append(ms)
                    if round_ is not documents:
                        restored.append(from_disk)
                    say(f"  {doc.uri.rsplit('/', 1)[-1]:<24} first suggestion {ms:9.1f} ms")
            finally:
                assistant.close()
    return {"first_ms": first, "restored_after_restart": restored}


async def _first_suggestion(
    assistant: Assistant, doc: TypingDocument, warm: bool, think_ms: float
) -> tuple[float, int]:
    """Wall milliseconds of the first suggestion, and the tokens restored from a parked slot
    for it (by the request, or by its warm-up)."""
    text, offset = doc.state()
    warming = asyncio.create_task(assistant.warm(doc.uri, text, offset)) if warm else None
    await asyncio.sleep(think_ms / 1000)
    started = time.perf_counter()
    suggestion = await assistant.complete(doc.uri, text, offset)
    elapsed = (time.perf_counter() - started) * 1000
    restored = suggestion.record.restored_tokens
    if warming is not None:
        with contextlib.suppress(Exception):  # preempted by the request, or done before it
            warmed = await warming
            restored += warmed.restored_tokens if warmed else 0  # restored by the warm-up
    return elapsed, restored


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _summary(runs: dict[str, dict], files: int, think_ms: float) -> dict[str, object]:
    p50 = {name: statistics.median(run["first_ms"]) for name, run in runs.items()}
    result: dict[str, object] = {
        "files": files,
        "slots": SLOTS,
        "reopened_after_restart": REOPENED,
        "think_ms": think_ms,
        "cold_first_p50_ms": round(p50["none"], 1),
        "warm_first_p50_ms": round(p50["warm"], 1),
        "parked_first_p50_ms": round(p50["park"], 1),
        "all_first_p50_ms": round(p50["all"], 1),
        "ratio_first": round(p50["all"] / p50["none"], 4) if p50["none"] else None,
        "prefetch": "not built yet: its rows are missing",
        "conditions": runs,
    }
    rows = [f"{'condition':10} {'first p50 ms':>13} {'after restart p50 ms':>21}"]
    for name, run in runs.items():
        after = statistics.median(run["first_ms"][files:])
        rows.append(f"{name:10} {p50[name]:>13.1f} {after:>21.1f}")
    rows.append(f"ratio_first (all / none) {result['ratio_first']}; think time {think_ms} ms")
    result["table"] = "\n".join(rows)
    return result
