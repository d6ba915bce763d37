"""`codeagent-lsp bench latency`: replay a typing session through the completion pipeline.

Three documents are open; in each, one line of real code is hidden and then typed back one
character at a time, with a completion request after every character, switching documents every
few characters. The same requests are then answered by a no-reuse baseline (the document's slot
is cleared before each, so the whole prompt is evaluated), on the same loaded model.

With the remote backend (`engine.backend = "remote"`) the same session is first replayed against
the inference replicas of `remote.urls` (a local llama_cpp.server on the same model when none is
given), then on the embedded engine as usual, so both figures come from the same run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from codeagent_lsp.assistant import Assistant
from codeagent_lsp.bench.replica import LocalReplica
from codeagent_lsp.engine import models
from codeagent_lsp.engine.backend import RequestRecord
from codeagent_lsp.settings import Settings

DEFAULT_FILES = ("asyncio/base_events.py", "email/message.py", "json/encoder.py")
BURST = 8
"""Characters typed in one document before switching to the next."""


@dataclass
class TypingDocument:
    """A real file with one line's code hidden after its indentation; `typed` of it are back."""

    uri: str
    head: str
    line: str
    tail: str
    typed: int = 0

    def state(self) -> tuple[str, int]:
        prefix = self.head + self.line[: self.typed]
        return prefix + self.tail, len(prefix)

    @classmethod
    def from_file(cls, path: Path) -> TypingDocument:
        lines = path.read_text(encoding="utf-8").split("\n")
        row = _typing_line(lines)
        code = lines[row].lstrip()
        indent = lines[row][: len(lines[row]) - len(code)]
        head = "\n".join(lines[:row]) + "\n" + indent
        tail = "\n" + "\n".join(lines[row + 1 :])
        return cls(path.resolve().as_uri(), head, code, tail)


def _typing_line(lines: list[str]) -> int:
    """A line of ordinary code around 60% into the file, long enough to type for a while."""
    start = int(len(lines) * 0.6)
    for row in range(start, len(lines)):
        code = lines[row].strip()
        if len(code) >= 30 and not code.startswith(("#", '"', "'")):
            return row
    raise ValueError("no line of code of at least 30 characters in the second half of the file")


def default_files(names: tuple[str, ...] = DEFAULT_FILES) -> list[Path]:
    """`names` (paths relative to the standard library) in this interpreter's standard library."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [stdlib / name for name in names]


async def run_latency_bench(
    settings: Settings,
    files: list[Path] | None,
    keystrokes: int,
    baseline_requests: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    say = progress or (lambda _m: None)
    paths = files or default_files()
    remote: list[RequestRecord] = []
    if settings.engine.backend == "remote":
        with _replicas(settings, say) as remote_settings:
            remote = await _remote_session(remote_settings, paths, keystrokes, say)
        settings = dataclasses.replace(
            settings, engine=dataclasses.replace(settings.engine, backend="embedded")
        )
    documents = [TypingDocument.from_file(p) for p in paths]
    assistant = Assistant(settings)
    try:
        info = await assistant.load()
        say(
            f"model {info.name} on {info.device}; {keystrokes} keystrokes over "
            f"{len(documents)} documents"
        )
        session = await _session(assistant, documents, keystrokes, say)
        baseline = await _baseline(assistant, settings, session, baseline_requests, say)
    finally:
        assistant.close()
    result = _summary(info.device, info.name, [r for _, r in session], baseline)
    if remote:
        result.update(_remote_summary(remote, result))
        result["table"] = f"{result['table']}\n{_remote_table(result)}"
    return result


@contextlib.contextmanager
def _replicas(settings: Settings, say: Callable[[str], None]) -> Iterator[Settings]:
    """`settings` as they are when remote.urls names replicas; else with one local
    llama_cpp.server replica on the same model, for as long as the block runs."""
    if settings.remote.urls:
        yield settings
        return
    model = models.resolve(
        settings.model_name(), models.models_dir(settings.models_dir_setting())
    ).path
    with tempfile.TemporaryDirectory() as folder:
        replica = LocalReplica(model, Path(folder) / "replica.log", settings.engine.threads or 2)
        say(f"starting a local llama_cpp.server replica on {model.name}")
        replica.start()
        try:
            remote = dataclasses.replace(settings.remote, urls=(replica.url,))
            yield dataclasses.replace(settings, remote=remote)
        finally:
            replica.kill()


async def _remote_session(
    settings: Settings, paths: list[Path], keystrokes: int, say: Callable[[str], None]
) -> list[RequestRecord]:
    documents = [TypingDocument.from_file(p) for p in paths]
    assistant = Assistant(settings)
    try:
        info = await assistant.load()
        say(f"remote: {info.device}, protocol {settings.remote.protocol}")
        return [r for _, r in await _session(assistant, documents, keystrokes, say)]
    finally:
        assistant.close()


async def _session(
    assistant: Assistant,
    documents: list[TypingDocument],
    keystrokes: int,
    say: Callable[[str], None],
) -> list[tuple[tuple[str, str, int], RequestRecord]]:
    """Requests in typing order, with the document state each one was made at."""
    out = []
    for i in range(keystrokes):
        doc = documents[(i // BURST) % len(documents)]
        doc.typed = min(doc.typed + 1, len(doc.line))
        text, offset = doc.state()
        suggestion = await assistant.complete(doc.uri, text, offset)
        out.append(((doc.uri, text, offset), suggestion.record))
        r = suggestion.record
        say(
            f"  {i + 1:3d} {r.outcome:<9} {r.total_ms:8.1f} ms  prompt {r.prompt_tokens:5d}  "
            f"evaluated {r.evaluated_tokens:5d}  shifted {r.shifted_tokens:4d}"
        )
    return out


async def _baseline(
    assistant: Assistant,
    settings: Settings,
    session: list[tuple[tuple[str, str, int], RequestRecord]],
    count: int,
    say: Callable[[str], None],
) -> list[RequestRecord]:
    """The same document states, each evaluated from an empty slot (no reuse of any kind)."""
    no_reuse = dataclasses.replace(settings.completion, reuseSuggestion=False)
    assistant.settings = dataclasses.replace(settings, completion=no_reuse)
    step = max(1, len(session) // max(1, count))
    records = []
    for (uri, text, offset), _ in session[::step][:count]:
        key = "baseline:" + uri
        assistant.forget(key)
        suggestion = await assistant.complete(key, text, offset)
        records.append(suggestion.record)
        say(
            f"  baseline {suggestion.record.total_ms:8.1f} ms  "
            f"evaluated {suggestion.record.evaluated_tokens}"
        )
    return records


def _p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(
    device: str, model: str, session: list[RequestRecord], baseline: list[RequestRecord]
) -> dict[str, object]:
    totals = [r.total_ms for r in session]
    model_calls = [r for r in session if r.outcome != "typeahead"]
    base_totals = [r.total_ms for r in baseline]
    p50, base_p50 = statistics.median(totals), statistics.median(base_totals)
    result: dict[str, object] = {
        "device": device,
        "model": model,
        "requests": len(session),
        "typeahead_hits": len(session) - len(model_calls),
        "p50_ms": round(p50, 1),
        "p95_ms": round(_p(totals, 0.95), 1),
        "ttft_p50_ms": round(statistics.median(r.ttft_ms for r in session), 1),
        "model_call_p50_ms": round(statistics.median(r.total_ms for r in model_calls), 1)
        if model_calls
        else 0.0,
        "prompt_tokens_p50": statistics.median(r.prompt_tokens for r in session),
        "evaluated_tokens_p50": statistics.median(r.evaluated_tokens for r in session),
        "evaluated_tokens_model_call_p50": statistics.median(
            r.evaluated_tokens for r in model_calls
        )
        if model_calls
        else 0,
        # The cost of running llama.cpp in a worker process: serialising, pipes, scheduling.
        "boundary_p50_ms": round(statistics.median(r.boundary_ms for r in model_calls), 3)
        if model_calls
        else 0.0,
        "boundary_max_ms": round(max((r.boundary_ms for r in model_calls), default=0.0), 3),
        "baseline_requests": len(baseline),
        "baseline_p50_ms": round(base_p50, 1),
        "baseline_p95_ms": round(_p(base_totals, 0.95), 1),
        "baseline_ttft_p50_ms": round(statistics.median(r.ttft_ms for r in baseline), 1),
        "baseline_evaluated_tokens_p50": statistics.median(r.evaluated_tokens for r in baseline),
        "ratio_p50": round(p50 / base_p50, 4) if base_p50 else None,
    }
    result["table"] = _table(result)
    return result


def _remote_summary(session: list[RequestRecord], embedded: dict[str, object]) -> dict[str, object]:
    totals = [r.total_ms for r in session]
    calls = [r for r in session if r.outcome != "typeahead"]
    call_p50 = statistics.median(r.total_ms for r in calls) if calls else 0.0
    embedded_call_p50 = embedded["model_call_p50_ms"]
    # Services that do not report their cache use (llama_cpp.server) leave evaluated unknown.
    reported = any(r.reused_tokens for r in calls)
    return {
        "remote_requests": len(session),
        "remote_typeahead_hits": len(session) - len(calls),
        "remote_p50_ms": round(statistics.median(totals), 1),
        "remote_p95_ms": round(_p(totals, 0.95), 1),
        "remote_ttft_p50_ms": round(statistics.median(r.ttft_ms for r in session), 1),
        "remote_model_call_p50_ms": round(call_p50, 1),
        "remote_evaluated_tokens_p50": (
            statistics.median(r.evaluated_tokens for r in session) if reported else None
        ),
        # Typed-ahead answers make both p50s 0 when the model predicts well: compare the calls.
        "remote_vs_embedded_model_call_p50": (
            round(call_p50 / embedded_call_p50, 2) if embedded_call_p50 else None  # type: ignore[operator]
        ),
    }


def _remote_table(r: dict[str, object]) -> str:
    evaluated = r["remote_evaluated_tokens_p50"]
    return "\n".join(
        [
            f"{'remote':10} {r['remote_p50_ms']:>9} {r['remote_p95_ms']:>9} "
            f"{r['remote_ttft_p50_ms']:>9} {'n/a' if evaluated is None else evaluated:>14}",
            f"remote: {r['remote_requests']} requests ({r['remote_typeahead_hits']} answered from "
            f"the last suggestion); model calls alone: p50 {r['remote_model_call_p50_ms']} ms, "
            f"remote / embedded {r['remote_vs_embedded_model_call_p50']}",
        ]
    )


def _table(r: dict[str, object]) -> str:
    return "\n".join(
        [
            f"latency on {r['device']} with {r['model']}: {r['requests']} requests "
            f"({r['typeahead_hits']} answered from the last suggestion)",
            f"{'':10} {'p50 ms':>9} {'p95 ms':>9} {'ttft p50':>9} {'evaluated p50':>14}",
            f"{'engine':10} {r['p50_ms']:>9} {r['p95_ms']:>9} {r['ttft_p50_ms']:>9} "
            f"{r['evaluated_tokens_p50']:>14}",
            f"{'no reuse':10} {r['baseline_p50_ms']:>9} {r['baseline_p95_ms']:>9} "
            f"{r['baseline_ttft_p50_ms']:>9} {r['baseline_evaluated_tokens_p50']:>14}",
            f"prompt tokens p50 {r['prompt_tokens_p50']}; model calls alone: p50 "
            f"{r['model_call_p50_ms']} ms, evaluated p50 {r['evaluated_tokens_model_call_p50']}; "
            f"ratio p50 {r['ratio_p50']}",
            f"process boundary per model call: p50 {r['boundary_p50_ms']} ms, max "
            f"{r['boundary_max_ms']} ms (next to the model call p50 {r['model_call_p50_ms']} ms)",
        ]
    )
