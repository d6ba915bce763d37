"""`codeagent-lsp bench latency --scenario cold-open`: the first suggestion in each document.

Ten files are opened one after another with four slots (so six are evicted), the server is
restarted, and the first three files are opened again. In each document the user "thinks" for
`think_ms` after opening it, then asks for a suggestion at the line the typing bench types; the
wall time of that first suggestion is measured. Then the user accepts it, thinks again and asks
for the next suggestion there: the wall time of that one is measured too. The same session runs
under five conditions on the same model, each with a fresh park folder: none (the behaviour
before warm-ups, parked slots and prefetch), each of the three mechanisms alone, and all three.
The warm-up starts at the cursor, as the editor integrations report it on open (didFocus), so
it computes the first suggestion there. Prefetch after accept cannot change a first suggestion
(nothing was accepted yet): it shows in the next one.
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
    "none": (False, False, False),
    "warm": (True, False, False),
    "park": (False, True, False),
    "prefetch": (False, False, True),
    "all": (True, True, True),
}
"""(warm-ups, parked slots, prefetch after accept) per condition."""
MECHANISMS = ("warm-ups", "parking", "prefetch")


async def run_cold_open_bench(
    settings: Settings,
    files: list[Path] | None,
    think_ms: float,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """First-suggestion latency per condition; keys `cold_first_p50_ms` (none),
    `warm_first_p50_ms`, `parked_first_p50_ms`, `prefetch_first_p50_ms`, `all_first_p50_ms`
    and `ratio_first` (all / none); and of the suggestion after accepting the first:
    `cold_next_p50_ms`, `prefetched_next_p50_ms`, `all_next_p50_ms`, `ratio_next` (all /
    none); per condition in `conditions` the raw times and outcomes. Milliseconds of wall
    time."""
    say = progress or (lambda _m: None)
    documents = [TypingDocument.from_file(p) for p in files or default_files(DEFAULT_FILES)]
    runs = {}
    for name, mechanisms in CONDITIONS.items():
        on = [f"{what} {_on(flag)}" for what, flag in zip(MECHANISMS, mechanisms, strict=True)]
        say(f"condition {name}: {', '.join(on)}")
        runs[name] = await _condition(settings, documents, mechanisms, think_ms, say)
    return _summary(runs, len(documents), think_ms)


async def _condition(
    settings: Settings,
    documents: list[TypingDocument],
    mechanisms: tuple[bool, bool, bool],
    think_ms: float,
    say: Callable[[str], None],
) -> dict[str, object]:
    warm, park, prefetch = mechanisms
    with tempfile.TemporaryDirectory() as folder:
        engine = dataclasses.replace(settings.engine, slots=SLOTS, parkSlots=park, parkDir=folder)
        chosen = dataclasses.replace(settings, engine=engine)
        first, first_outcomes, after_accept, outcomes, restored = [], [], [], [], []
        for round_ in (documents, documents[:REOPENED]):  # a restart between the two
            assistant = Assistant(chosen)
            try:
                await assistant.load()
                for doc in round_:
                    ms, outcome, from_disk, shown = await _first_suggestion(
                        assistant, doc, warm, think_ms
                    )
                    first.append(ms)
                    first_outcomes.append(outcome)
                    if round_ is not documents:
                        restored.append(from_disk)
                    name = doc.uri.rsplit("/", 1)[-1]
                    say(f"  {name:<24} first suggestion {ms:9.1f} ms")
                    if shown:
                        next_ms, outcome = await _after_accept(
                            assistant, doc, shown, prefetch, think_ms
                        )
                        after_accept.append(next_ms)
                        outcomes.append(outcome)
                        say(f"  {name:<24} after accepting it {next_ms:7.1f} ms")
            finally:
                assistant.close()
    return {
        "first_ms": first,
        "first_outcomes": first_outcomes,
        "next_ms": after_accept,
        "next_outcomes": outcomes,
        "restored_after_restart": restored,
    }


async def _first_suggestion(
    assistant: Assistant, doc: TypingDocument, warm: bool, think_ms: float
) -> tuple[float, str, int, str]:
    """Wall milliseconds and outcome of the first suggestion (`prefetched` when the warm-up
    computed it), the tokens restored from a parked slot for it (by the request, or by its
    warm-up), and its text."""
    text, offset = doc.state()
    warming = None
    if warm:  # the editor integrations report the cursor of a document they open (didFocus)
        warming = asyncio.create_task(assistant.warm(doc.uri, text, offset, at_cursor=True))
    await asyncio.sleep(think_ms / 1000)
    started = time.perf_counter()
    suggestion = await assistant.complete(doc.uri, text, offset)
    elapsed = (time.perf_counter() - started) * 1000
    restored = suggestion.record.restored_tokens
    if warming is not None:
        with contextlib.suppress(Exception):  # preempted by the request, or done before it
            warmed = await warming
            restored += warmed.restored_tokens if warmed else 0  # restored by the warm-up
    return elapsed, suggestion.record.outcome, restored, suggestion.text


async def _after_accept(
    assistant: Assistant, doc: TypingDocument, shown: str, prefetch: bool, think_ms: float
) -> tuple[float, str]:
    """Wall milliseconds and outcome of the suggestion after `shown` is accepted and the user
    thinks `think_ms` (the server starts a prefetch at the accept, as its didChange handler
    does)."""
    text, offset = doc.state()
    text, offset = text[:offset] + shown + text[offset:], offset + len(shown)
    fetching = asyncio.create_task(assistant.prefetch(doc.uri, text, offset)) if prefetch else None
    await asyncio.sleep(think_ms / 1000)
    started = time.perf_counter()
    suggestion = await assistant.complete(doc.uri, text, offset)
    elapsed = (time.perf_counter() - started) * 1000
    if fetching is not None:
        with contextlib.suppress(Exception):  # its answer was used, or it was stopped
            await fetching
    return elapsed, suggestion.record.outcome


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _median(values: list[float]) -> float | None:
    """None when no suggestion could be accepted (the model suggested nothing)."""
    return round(statistics.median(values), 1) if values else None


def _ratio(part: float | None, whole: float | None) -> float | None:
    return round(part / whole, 4) if part is not None and whole else None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _summary(runs: dict[str, dict], files: int, think_ms: float) -> dict[str, object]:
    p50 = {name: statistics.median(run["first_ms"]) for name, run in runs.items()}
    after = {name: _median(run["next_ms"]) for name, run in runs.items()}
    result: dict[str, object] = {
        "files": files,
        "slots": SLOTS,
        "reopened_after_restart": REOPENED,
        "think_ms": think_ms,
        "cold_first_p50_ms": round(p50["none"], 1),
        "warm_first_p50_ms": round(p50["warm"], 1),
        "parked_first_p50_ms": round(p50["park"], 1),
        "prefetch_first_p50_ms": round(p50["prefetch"], 1),
        "all_first_p50_ms": round(p50["all"], 1),
        "ratio_first": _ratio(p50["all"], p50["none"]),
        "cold_next_p50_ms": after["none"],
        "prefetched_next_p50_ms": after["prefetch"],
        "all_next_p50_ms": after["all"],
        "ratio_next": _ratio(after["all"], after["none"]),
        "conditions": runs,
    }
    head = ("condition", "first p50 ms", "after restart p50 ms", "next p50 ms")
    rows = ["{:10} {:>13} {:>21} {:>12}".format(*head)]
    for name, run in runs.items():
        restart = statistics.median(run["first_ms"][files:])
        rows.append(f"{name:10} {p50[name]:>13.1f} {restart:>21.1f} {_cell(after[name]):>12}")
    rows.append(
        f"ratio_first (all / none) {result['ratio_first']}; ratio_next {result['ratio_next']}; "
        f"think time {think_ms} ms; next = the suggestion after accepting the first"
    )
    result["table"] = "\n".join(rows)
    return result
