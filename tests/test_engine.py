"""The embedded engine on the tiny GGUF: real llama.cpp, real KV cache, real cancellation.

The tiny model's greedy output is identifier noise that never contains a newline, a space or
EOS, so every generation runs to its limit and whitespace tokens appended to a prompt never
coincide with what the model generated after it.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import llama_cpp.llama_cpp as C
import pytest

from codeagent_lsp.engine.backend import Generation
from codeagent_lsp.engine.engine import (
    MAX_SHIFT_DRIFT,
    MIN_SHIFT_CHUNK,
    Engine,
    GenerationJob,
)
from codeagent_lsp.engine.llama import EngineError
from codeagent_lsp.engine.slots import short_name
from codeagent_lsp.settings import EngineSettings

CODE = """\
import os
import sys


def read_file(path: str) -> str:
    with open(path, "r", encoding="utf-8") as handle:
        return handle.read()


def fibonacci(n: int) -> int:
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)
"""
SUFFIX_CODE = """

def main() -> int:
    args = parse_args(sys.argv[1:])
    for name in os.listdir(args.get("path", ".")):
        print(name)
    return 0
"""
WAIT = 60.0  # seconds: a ceiling for results, never reached when the engine works

MakeEngine = Callable[..., Engine]


@pytest.fixture
def make_engine(tiny_model: Path) -> Iterator[MakeEngine]:
    """Engines on the tiny model (one thread, 2 slots, 2048 tokens unless overridden)."""
    engines: list[Engine] = []

    def make(**overrides: object) -> Engine:
        options: dict[str, object] = {"threads": 1, "slots": 2, "contextSize": 2048}
        settings = EngineSettings(**{**options, **overrides})  # type: ignore[arg-type]
        engine = Engine(tiny_model, settings)
        engines.append(engine)
        engine.wait_loaded(timeout=WAIT)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine: MakeEngine) -> Engine:
    return make_engine()


def generate(engine: Engine, key: str, tokens: list[int], **job: object) -> Generation:
    return engine.submit(GenerationJob(key, tokens, **job)).result(timeout=WAIT)  # type: ignore[arg-type]


def slot_of(engine: Engine, key: str) -> dict[str, object] | None:
    table = engine.stats()["slots"]
    assert isinstance(table, list)
    return next((s for s in table if s["document"] == short_name(key)), None)


def documents(engine: Engine) -> list[str]:
    """Documents in the slot table, most recently used first."""
    table = engine.stats()["slots"]
    assert isinstance(table, list)
    return [s["document"] for s in table]


def assert_cache_coherent(engine: Engine, key: str) -> int:
    """The slot's bookkeeping matches what llama.cpp holds; returns the cached length."""
    slot = slot_of(engine, key)
    assert slot is not None
    # The engine is idle between requests: reading the KV cache from this thread is safe.
    assert engine.runtime.cached_length(slot["seq"]) == slot["cachedTokens"]  # type: ignore[arg-type]
    return slot["cachedTokens"]  # type: ignore[return-value]


def kv_bytes(engine: Engine, seq: int) -> int:
    """Size of a sequence's saved state: it grows with every KV cell the sequence holds."""
    return C.llama_state_seq_get_size(engine.runtime.ctx, seq)


def assert_same_cells_as_fresh(engine: Engine, key: str, tokens: list[int], tail: int) -> None:
    """`key`'s cache holds as many cells as a fresh evaluation of the same request: no hole (a
    cell lost by a wrong shift) and no stray cell, which positions alone would not show."""
    shifted = slot_of(engine, key)
    assert shifted is not None
    generate(engine, "reference", tokens, tail_start=tail, max_tokens=5)
    fresh = slot_of(engine, "reference")
    assert fresh is not None and fresh["cachedTokens"] == shifted["cachedTokens"]
    assert kv_bytes(engine, shifted["seq"]) == kv_bytes(engine, fresh["seq"])  # type: ignore[arg-type]
    assert engine.runtime.cached_length(engine.settings.slots) == 0  # the scratch sequence
    engine.release("reference")


def wait_running(job: GenerationJob, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not job.future.running() and not job.future.done():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.002)


# --- longest common prefix ----------------------------------------------------------------------


def test_extended_prompt_reuses_the_cached_prefix(engine: Engine) -> None:
    prompt = engine.tokenize(CODE)
    first = generate(engine, "a.py", prompt, max_tokens=4)
    assert first.record.outcome == "ok"
    assert (first.record.reused_tokens, first.record.evaluated_tokens) == (0, len(prompt))
    assert first.record.generated_tokens == 4 and first.text

    extra = engine.tokenize("\n\n\n    ")  # whitespace: never what the model generated
    second = generate(engine, "a.py", prompt + extra, max_tokens=4)
    assert second.record.reused_tokens == len(prompt)
    assert second.record.evaluated_tokens == len(extra)
    assert second.record.shifted_tokens == 0

    other = generate(engine, "b.py", prompt + extra, max_tokens=4)
    assert other.record.slot != second.record.slot
    assert other.record.reused_tokens == 0
    assert other.record.evaluated_tokens == len(prompt + extra)
    # Same prompt, fresh cache: the same greedy continuation.
    assert other.text == second.text


def test_identical_prompt_evaluates_only_its_last_token(engine: Engine) -> None:
    prompt = engine.tokenize(CODE)
    first = generate(engine, "a.py", prompt, max_tokens=6)
    again = generate(engine, "a.py", prompt, max_tokens=6)
    assert again.record.reused_tokens == len(prompt) - 1
    assert again.record.evaluated_tokens == 1  # logits for sampling need one decoded token
    assert again.text == first.text
    # The last sampled token is never decoded: nothing needs its logits.
    assert assert_cache_coherent(engine, "a.py") == len(prompt) + 6 - 1


# --- FIM suffix shift ---------------------------------------------------------------------------


class Fim:
    """FIM prompts `[pre] prefix [suf] suffix [mid]` with the tiny model's control tokens."""

    def __init__(self, engine: Engine) -> None:
        ids = [engine.token_id(t) for t in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")]
        assert all(isinstance(i, int) for i in ids)
        self.pre, self.suf, self.mid = ids  # type: ignore[assignment]

    def prompt(self, prefix: list[int], suffix: list[int]) -> tuple[list[int], int]:
        return [self.pre, *prefix, self.suf, *suffix, self.mid], 1 + len(prefix)


def fim_generate(
    engine: Engine, fim: Fim, prefix: list[int], suffix: list[int], key: str = "f.py"
) -> Generation:
    tokens, tail = fim.prompt(prefix, suffix)
    return generate(engine, key, tokens, tail_start=tail, max_tokens=5)


def test_grown_prefix_shifts_the_cached_suffix(engine: Engine) -> None:
    fim = Fim(engine)
    prefix, suffix = engine.tokenize(CODE), engine.tokenize(SUFFIX_CODE)
    assert len(suffix) >= MIN_SHIFT_CHUNK
    first = fim_generate(engine, fim, prefix, suffix)
    assert first.record.evaluated_tokens == len(prefix) + len(suffix) + 3

    typed = engine.tokenize("\n    x = 1")
    grown = prefix + typed
    second = fim_generate(engine, fim, grown, suffix)
    record = second.record
    assert record.evaluated_tokens == len(typed) + 1  # the new prefix tokens and [mid]
    assert record.shifted_tokens == len(suffix) + 1  # [suf] and the suffix text
    assert record.reused_tokens == 1 + len(prefix) + record.shifted_tokens
    assert record.prompt_tokens == record.reused_tokens + record.evaluated_tokens

    # The shifted cache is coherent: contiguous positions, bookkeeping equal to llama.cpp's.
    prompt_length = len(grown) + len(suffix) + 3
    cached = assert_cache_coherent(engine, "f.py")
    assert cached == prompt_length + record.generated_tokens - 1
    assert_same_cells_as_fresh(engine, "f.py", *fim.prompt(grown, suffix))
    again = fim_generate(engine, fim, grown, suffix)
    assert again.record.reused_tokens == prompt_length - 1
    assert again.record.evaluated_tokens == 1
    assert again.record.shifted_tokens == 0
    # Same cache contents up to [mid]: the same continuation as the shifted request.
    assert again.text == second.text


def test_prefix_shrunk_by_whole_tokens_shifts_the_suffix(engine: Engine) -> None:
    """A backspace that removes the prefix's last tokens moves the suffix back."""
    fim = Fim(engine)
    prefix, suffix = engine.tokenize(CODE), engine.tokenize(SUFFIX_CODE)
    fim_generate(engine, fim, prefix, suffix)
    shrunk = fim_generate(engine, fim, prefix[:-2], suffix).record
    assert shrunk.shifted_tokens == len(suffix) + 1
    assert shrunk.evaluated_tokens == 1
    assert assert_cache_coherent(engine, "f.py") == shrunk.prompt_tokens + 5 - 1
    assert_same_cells_as_fresh(engine, "f.py", *fim.prompt(prefix[:-2], suffix))


def test_cache_shift_off_evaluates_the_suffix_again(make_engine: MakeEngine) -> None:
    engine = make_engine(cacheShift=False)
    fim = Fim(engine)
    prefix, suffix = engine.tokenize(CODE), engine.tokenize(SUFFIX_CODE)
    fim_generate(engine, fim, prefix, suffix)
    typed = engine.tokenize("\n    x = 1")
    record = fim_generate(engine, fim, prefix + typed, suffix).record
    assert record.shifted_tokens == 0
    assert record.reused_tokens == 1 + len(prefix)
    assert record.evaluated_tokens == len(typed) + len(suffix) + 2


def test_short_suffix_is_evaluated_rather_than_shifted(engine: Engine) -> None:
    fim = Fim(engine)
    prefix, suffix = engine.tokenize(CODE), engine.tokenize(")\n")
    assert len(suffix) + 1 < MIN_SHIFT_CHUNK
    fim_generate(engine, fim, prefix, suffix)
    typed = engine.tokenize("\n    x = 1")
    record = fim_generate(engine, fim, prefix + typed, suffix).record
    assert record.shifted_tokens == 0
    assert record.evaluated_tokens == len(typed) + len(suffix) + 2


def test_suffix_is_evaluated_afresh_after_too_much_drift(engine: Engine) -> None:
    fim = Fim(engine)
    prefix, suffix = engine.tokenize(CODE), engine.tokenize(SUFFIX_CODE)
    line = engine.tokenize("\n    total = total + compute(value, other)")
    per_edit = MAX_SHIFT_DRIFT // 2 + 1
    typed = (line * (per_edit // len(line) + 1))[:per_edit]
    fim_generate(engine, fim, prefix, suffix)

    # Drift per_edit: within the bound, shifted.
    prefix += typed
    assert fim_generate(engine, fim, prefix, suffix).record.shifted_tokens == len(suffix) + 1
    # Drift 2 * per_edit > MAX_SHIFT_DRIFT: the suffix is computed afresh.
    prefix += typed
    afresh = fim_generate(engine, fim, prefix, suffix).record
    assert afresh.shifted_tokens == 0
    assert afresh.evaluated_tokens == len(typed) + len(suffix) + 2
    # The fresh suffix starts a new drift budget.
    prefix += typed
    assert fim_generate(engine, fim, prefix, suffix).record.shifted_tokens == len(suffix) + 1
    assert_cache_coherent(engine, "f.py")

    # One edit larger than the bound is never shifted.
    fim_generate(engine, fim, prefix, suffix, key="g.py")
    big = (line * (MAX_SHIFT_DRIFT // len(line) + 2))[: MAX_SHIFT_DRIFT + 1]
    record = fim_generate(engine, fim, prefix + big, suffix, key="g.py").record
    assert record.shifted_tokens == 0
    assert record.evaluated_tokens == len(big) + len(suffix) + 2


# --- slots --------------------------------------------------------------------------------------


def test_least_recently_used_slot_is_evicted(engine: Engine) -> None:
    prompts = {key: engine.tokenize(f"# {key}\n" + CODE) for key in ("a.py", "b.py", "c.py")}
    for key in ("a.py", "b.py"):
        generate(engine, key, prompts[key], max_tokens=2)
    assert documents(engine) == [short_name("b.py"), short_name("a.py")]
    seq_a = slot_of(engine, "a.py")["seq"]  # type: ignore[index]

    c = generate(engine, "c.py", prompts["c.py"], max_tokens=2).record
    assert documents(engine) == [short_name("c.py"), short_name("b.py")]
    assert c.slot == seq_a  # a.py's sequence, cleared and handed over
    assert c.reused_tokens == 0

    # b.py survived; using it makes c.py the least recently used.
    assert generate(engine, "b.py", prompts["b.py"], max_tokens=2).record.evaluated_tokens == 1
    a = generate(engine, "a.py", prompts["a.py"], max_tokens=2).record
    assert (a.reused_tokens, a.evaluated_tokens) == (0, len(prompts["a.py"]))
    assert documents(engine) == [short_name("a.py"), short_name("b.py")]
    for key in ("a.py", "b.py"):
        assert_cache_coherent(engine, key)


def test_release_frees_the_slot(engine: Engine) -> None:
    prompt = engine.tokenize(CODE)
    seq_a = generate(engine, "a.py", prompt, max_tokens=2).record.slot
    generate(engine, "b.py", prompt, max_tokens=2)
    engine.release("a.py")
    # The release is queued: a request behind it runs after it.
    assert generate(engine, "b.py", prompt, max_tokens=2).record.evaluated_tokens == 1
    assert documents(engine) == [short_name("b.py")]
    assert engine.runtime.cached_length(seq_a) == 0

    c = generate(engine, "c.py", prompt, max_tokens=2).record
    assert c.slot == seq_a
    assert c.evaluated_tokens == len(prompt)
    # No eviction was needed: b.py kept its cache.
    assert generate(engine, "b.py", prompt, max_tokens=2).record.reused_tokens == len(prompt) - 1
    assert generate(engine, "a.py", prompt, max_tokens=2).record.reused_tokens == 0


# --- context limits -----------------------------------------------------------------------------


def test_prompt_too_long_for_the_context_is_an_error(make_engine: MakeEngine) -> None:
    engine = make_engine(contextSize=512)
    n_ctx = engine.runtime.n_ctx
    long_prompt = (engine.tokenize(CODE) * (n_ctx // 50 + 2))[: n_ctx + 10]
    with pytest.raises(EngineError, match=rf"{len(long_prompt)} tokens does not fit .*{n_ctx}"):
        generate(engine, "a.py", long_prompt)
    # The prompt fits alone but not with the tokens to generate.
    with pytest.raises(EngineError, match="lower the completion token budgets"):
        generate(engine, "a.py", long_prompt[: n_ctx - 10], max_tokens=20)
    with pytest.raises(EngineError, match="empty prompt"):
        generate(engine, "a.py", [])
    # The engine thread survives and serves.
    ok = generate(engine, "a.py", engine.tokenize(CODE), max_tokens=3)
    assert ok.record.outcome == "ok" and ok.record.generated_tokens == 3
    assert_cache_coherent(engine, "a.py")


def test_full_kv_cache_evicts_the_other_slot(make_engine: MakeEngine) -> None:
    engine = make_engine(contextSize=512, batchSize=64)
    n_ctx = engine.runtime.n_ctx
    size = int(n_ctx * 0.7)  # two of these do not fit the unified cache together
    base = engine.tokenize(CODE) * (n_ctx // 50 + 1)
    a_prompt, b_prompt = base[:size], base[1 : size + 1]

    a = generate(engine, "a.py", a_prompt, max_tokens=4)
    b = generate(engine, "b.py", b_prompt, max_tokens=4)
    assert b.record.outcome == "ok"
    assert b.record.evaluated_tokens == size
    assert slot_of(engine, "a.py")["cachedTokens"] == 0  # type: ignore[index]
    assert engine.runtime.cached_length(a.record.slot) == 0
    assert assert_cache_coherent(engine, "b.py") == size + 4 - 1

    # a.py comes back: evaluated in full, and b.py makes room in turn.
    again = generate(engine, "a.py", a_prompt, max_tokens=4)
    assert again.record.outcome == "ok"
    assert (again.record.reused_tokens, again.record.evaluated_tokens) == (0, size)
    assert again.text == a.text
    assert slot_of(engine, "b.py")["cachedTokens"] == 0  # type: ignore[index]
    assert_cache_coherent(engine, "a.py")


_CLAMPED_BATCH = """
import sys
from pathlib import Path
from codeagent_lsp.engine.engine import Engine, GenerationJob
from codeagent_lsp.settings import EngineSettings

engine = Engine(Path(sys.argv[1]), EngineSettings(threads=1, contextSize=300, batchSize=512))
prompt = engine.tokenize("x = 1\\n" * 200)[:400]
record = engine.submit(GenerationJob("a.py", prompt, max_tokens=4)).result(60).record
engine.close()
print(record.outcome, record.evaluated_tokens, record.generated_tokens)
"""


def test_batch_size_above_the_context_size_is_clamped(tiny_model: Path) -> None:
    """llama.cpp lowers n_batch to the requested context (300 here, while the cache holds 512);
    decoding 400 tokens in one call would fail a GGML_ASSERT and abort the process, so this
    runs in a child process."""
    child = subprocess.run(
        [sys.executable, "-c", _CLAMPED_BATCH, str(tiny_model)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split() == ["ok", "400", "4"]


# --- cancellation and supersession --------------------------------------------------------------


def test_cancel_during_prompt_evaluation_keeps_what_was_decoded(make_engine: MakeEngine) -> None:
    engine = make_engine(contextSize=4096, batchSize=32, slots=1)
    prompt = (engine.tokenize(CODE) * 40)[:2500]
    job = GenerationJob("a.py", prompt, max_tokens=4)
    engine.submit(job)
    wait_running(job)
    time.sleep(0.15)  # some batches of 32 are decoded; evaluating all 2500 takes seconds
    cancelled_at = time.perf_counter()
    engine.cancel(job)
    result = job.future.result(timeout=WAIT)
    assert time.perf_counter() - cancelled_at < 1.0  # aborted mid-prompt, not at its end
    record = result.record
    assert record.outcome == "cancelled" and result.cancelled
    assert result.text == ""
    assert 0 < record.evaluated_tokens < len(prompt)
    assert record.generated_tokens == 0
    # llama.cpp keeps the batches decoded before the abort, and the slot knows exactly which.
    assert assert_cache_coherent(engine, "a.py") == record.evaluated_tokens

    follow_up = generate(engine, "a.py", prompt, max_tokens=2).record
    assert follow_up.outcome == "ok"
    assert follow_up.reused_tokens == record.evaluated_tokens
    assert follow_up.evaluated_tokens == len(prompt) - record.evaluated_tokens


def test_cancel_during_generation_stops_early(make_engine: MakeEngine) -> None:
    engine = make_engine(contextSize=8192)
    prompt = engine.tokenize(CODE)
    job = GenerationJob("a.py", prompt, max_tokens=5000)
    engine.submit(job)
    wait_running(job)
    time.sleep(0.2)
    engine.cancel(job)
    record = job.future.result(timeout=WAIT).record
    assert record.outcome == "cancelled"
    assert 0 < record.generated_tokens < 5000
    assert record.evaluated_tokens == len(prompt)
    assert_cache_coherent(engine, "a.py")
    # Generated tokens are not part of the next prompt: all but the last prompt token reused.
    again = generate(engine, "a.py", prompt, max_tokens=2).record
    assert (again.outcome, again.reused_tokens) == ("ok", len(prompt) - 1)


def test_cancel_before_start_never_runs(make_engine: MakeEngine) -> None:
    engine = make_engine(contextSize=8192)
    prompt = engine.tokenize(CODE)
    busy = GenerationJob("busy.py", prompt, max_tokens=5000)
    engine.submit(busy)
    wait_running(busy)
    queued = GenerationJob("a.py", prompt, max_tokens=4)
    engine.submit(queued)
    engine.cancel(queued)
    engine.cancel(busy)
    record = queued.future.result(timeout=WAIT).record
    assert (record.outcome, record.slot, record.evaluated_tokens) == ("cancelled", -1, 0)
    assert slot_of(engine, "a.py") is None
    assert busy.future.result(timeout=WAIT).record.outcome == "cancelled"


def test_newer_job_for_the_same_document_supersedes_the_running_one(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(contextSize=8192)
    prompt = engine.tokenize(CODE)
    first = GenerationJob("a.py", prompt, max_tokens=5000)
    engine.submit(first)
    wait_running(first)
    time.sleep(0.05)
    second = GenerationJob("a.py", prompt, max_tokens=4)
    engine.submit(second)
    old = first.future.result(timeout=WAIT)
    assert old.record.outcome == "superseded" and old.cancelled
    assert old.record.generated_tokens < 5000
    new = second.future.result(timeout=WAIT)
    assert new.record.outcome == "ok"
    assert new.record.reused_tokens == len(prompt) - 1  # the first job's prompt stayed cached


def test_newer_job_supersedes_a_queued_one(make_engine: MakeEngine) -> None:
    engine = make_engine(contextSize=8192)
    prompt = engine.tokenize(CODE)
    busy = GenerationJob("busy.py", prompt, max_tokens=5000)
    engine.submit(busy)
    wait_running(busy)
    older, newer = (GenerationJob("a.py", prompt, max_tokens=3) for _ in range(2))
    engine.submit(older)
    engine.submit(newer)
    # Another document's job is not superseded by them.
    assert not busy.cancel_event.is_set()
    engine.cancel(busy)
    assert older.future.result(timeout=WAIT).record.outcome == "superseded"
    assert older.future.result().record.slot == -1
    assert newer.future.result(timeout=WAIT).record.outcome == "ok"
    assert busy.future.result(timeout=WAIT).record.outcome == "cancelled"


# --- early stops --------------------------------------------------------------------------------


def test_should_stop_ends_generation(engine: Engine) -> None:
    prompt = engine.tokenize(CODE)
    seen: list[str] = []

    def enough(text: str) -> bool:
        seen.append(text)
        return len(text) >= 12

    result = generate(engine, "a.py", prompt, max_tokens=40, should_stop=enough)
    assert result.record.outcome == "ok"
    assert len(result.text) >= 12 and len(seen[-2]) < 12
    assert result.text == seen[-1]
    assert result.record.generated_tokens == len(seen) < 40
    # Each call saw the text grow by one token's piece.
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(seen))
    assert assert_cache_coherent(engine, "a.py") == len(prompt) + len(seen) - 1


def test_stop_token_ends_generation_before_it(engine: Engine) -> None:
    prompt = engine.tokenize(CODE)
    texts: list[str] = []
    generate(engine, "a.py", prompt, max_tokens=8, should_stop=lambda t: texts.append(t) or False)
    pieces = [b[len(a) :] for a, b in zip(["", *texts], texts, strict=False)]
    assert len(pieces) == 8
    # A generated token (after the first) whose piece tokenizes back to itself alone.
    index, stop = next(
        (i, ids[0])
        for i, piece in enumerate(pieces)
        if i > 0 and len(ids := engine.tokenize(piece)) == 1
    )
    first_hit = pieces.index(pieces[index])
    result = generate(engine, "a.py", prompt, max_tokens=8, stop_tokens=frozenset({stop}))
    assert result.text == "".join(pieces[:first_hit])
    assert result.record.generated_tokens == first_hit < 8
