"""The embedded engine: one inference thread that owns a llama.cpp context and its slots.

Per request it finds the longest common prefix between the prompt and the tokens its document's
slot already holds, drops the rest (`llama_memory_seq_rm`), optionally moves the cached FIM
suffix to its new position (`llama_memory_seq_add`) instead of evaluating it again, decodes only
what is left and samples. The newest request for a document supersedes older ones; cancellation
is checked between tokens and interrupts prompt evaluation through llama.cpp's abort callback.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codeagent_lsp.engine.backend import Generation, RequestRecord
from codeagent_lsp.engine.llama import (
    Aborted,
    AbortFlag,
    EngineError,
    LlamaRuntime,
    ModelInfo,
    NoKvSpace,
    Sampler,
)
from codeagent_lsp.engine.parking import MIN_PARK_TOKENS, SlotPark, Speeds
from codeagent_lsp.engine.protocol import SharedFlags
from codeagent_lsp.engine.slots import Slot, SlotTable, short_name
from codeagent_lsp.metrics import count_generation
from codeagent_lsp.settings import EngineSettings

log = logging.getLogger(__name__)

MIN_SHIFT_CHUNK = 8
"""Cached tail shorter than this is evaluated again: a shift costs about as much."""
MAX_SHIFT_DRIFT = 64
"""Prefix tokens the cached suffix may lag behind before it is computed afresh. A shifted
suffix was computed against an older prefix (as llama-server's --cache-reuse does); this bounds
how old that prefix may get."""


@dataclass
class GenerationJob:
    key: str
    """The document (its URI); one slot per key."""
    tokens: list[int]
    tail_start: int | None = None
    """Where the stable tail (the FIM suffix) begins in `tokens`: it may be shifted, not redone."""
    max_tokens: int = 48
    temperature: float = 0.0
    stop_tokens: frozenset[int] = frozenset()
    should_stop: Callable[[str], bool] | None = None
    """Called with the text so far after each token; True ends generation early."""
    cancel_event: threading.Event = field(default_factory=threading.Event)
    future: concurrent.futures.Future[Generation] = field(default_factory=concurrent.futures.Future)
    outcome_if_cancelled: str = "cancelled"
    id: int = 0
    """Unique per engine user; names the request in the worker protocol and `SharedFlags`."""
    background: bool = False
    """A warm-up or prefetch: any other request submitted preempts it (outcome "preempted")."""

    def cancel(self, outcome: str = "cancelled") -> None:
        self.outcome_if_cancelled = outcome
        self.cancel_event.set()


@dataclass(frozen=True)
class _Release:
    """Queued by `Engine.release`: clear a closed document's slot on the engine thread."""

    key: str


class Engine:
    """Loads a model on its own thread and serves generation jobs one at a time."""

    def __init__(
        self,
        model_path: Path,
        settings: EngineSettings,
        *,
        record_limit: int = 256,
        flags: SharedFlags | None = None,
        park: SlotPark | None = None,
    ):
        """`flags`: the page through which another process (the language server) aborts the
        running request; None when only this process cancels. `park`: where evicted, released
        and (at close) all slots' KV caches go, to come back with their documents."""
        self.settings = settings
        self.flags = flags
        self.park = park
        self.speeds = Speeds()
        """Measured prompt-evaluation and restore speeds: a restore slower than evaluating
        the prompt again is skipped."""
        self.slots = SlotTable(settings.slots)
        self.records: deque[tuple[str, RequestRecord]] = deque(maxlen=record_limit)
        """(key of the document or of its owner, record): stats show each owner its own."""
        self._queue: queue.Queue[GenerationJob | _Release | None] = queue.Queue()
        self._lock = threading.Lock()
        self._running: GenerationJob | None = None
        self._latest: dict[str, GenerationJob] = {}
        self._loaded: concurrent.futures.Future[ModelInfo] = concurrent.futures.Future()
        self._runtime: LlamaRuntime | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, args=(model_path,), name="codeagent-engine", daemon=True
        )
        self._thread.start()

    # --- public API (any thread) ----------------------------------------------------------------

    def wait_loaded(self, timeout: float | None = None) -> ModelInfo:
        """Model information once loaded; raises EngineError when loading failed."""
        return self._loaded.result(timeout)

    @property
    def runtime(self) -> LlamaRuntime:
        self.wait_loaded()
        assert self._runtime is not None
        return self._runtime

    def tokenize(self, text: str) -> list[int]:
        """Plain text to tokens (control-token text is not parsed). Safe off the engine thread:
        tokenization only reads the vocabulary."""
        return self.runtime.tokenize(text)

    def count_tokens(self, text: str) -> int:
        return len(self.runtime.tokenize(text))

    def token_id(self, text: str) -> int | None:
        return self.runtime.token_id(text)

    def submit(self, job: GenerationJob) -> concurrent.futures.Future[Generation]:
        """Queue `job`; an older job for the same document is superseded."""
        with self._lock:
            if self._closed:
                job.future.set_exception(EngineError("the engine was closed"))
                return job.future
            if job.background and any(not j.background for j in self._latest.values()):
                # A warm-up never delays, nor supersedes, a request: dropped unrun, unrecorded.
                job.cancel("preempted")
                job.future.set_result(self._cancelled_record(job))
                return job.future
            previous = self._latest.get(job.key)
            if previous is not None:  # a warm-up overtaken by its own request was preempted
                self._cancel_locked(previous, "preempted" if previous.background else "superseded")
            if not job.background:  # real requests go first
                for other in self._latest.values():
                    if other.background and other is not previous:
                        self._cancel_locked(other, "preempted")
            self._latest[job.key] = job
        self._queue.put(job)
        return job.future

    def cancel(self, job: GenerationJob) -> None:
        with self._lock:
            self._cancel_locked(job, "cancelled")

    def release(self, key: str) -> None:
        """Forget a closed document: its slot's sequence is cleared on the engine thread."""
        self._queue.put(_Release(key))

    def add_record(self, record: RequestRecord, owner: str = "") -> None:
        """Record a request answered without the engine (a reused suggestion)."""
        self._record(owner, record)

    def stats(self, owner: str = "") -> dict[str, object]:
        """Records and slots of the keys that start with `owner` (all of them by default)."""
        with self._lock:
            records = [r.to_json() for key, r in self.records if key.startswith(owner)]
            table = self.slots.table(owner)
        return {"records": records, "slots": table}

    def slot_rows(self) -> list[tuple[str, dict[str, object]]]:
        with self._lock:
            return self.slots.rows()

    def release_owner(self, owner: str) -> None:
        """A client of a shared engine left: cancel its requests and free its slots."""
        with self._lock:
            for key, job in self._latest.items():
                if key.startswith(owner):
                    self._cancel_locked(job, "cancelled")
            keys = self.slots.keys(owner)
        for key in keys:
            self.release(key)

    def close(self) -> None:
        """Cancel what is queued or running, then stop the engine thread and free the model."""
        with self._lock:
            self._closed = True
            for job in list(self._latest.values()):
                self._cancel_locked(job, "cancelled")
        self._queue.put(None)
        self._thread.join(timeout=30)

    def cancelled(self, job: GenerationJob) -> bool:
        """Whether `job` was cancelled, here or by the other process through `flags`."""
        return job.cancel_event.is_set() or (
            self.flags is not None and self.flags.cancelled == job.id
        )

    def _cancel_locked(self, job: GenerationJob, outcome: str) -> None:
        job.cancel(outcome)
        if job is self._running and self._runtime is not None:
            self._runtime.abort.set(True)

    # --- engine thread --------------------------------------------------------------------------

    @property
    def _rt(self) -> LlamaRuntime:
        """The loaded runtime: the engine thread serves jobs only after loading it."""
        assert self._runtime is not None
        return self._runtime

    def _run(self, model_path: Path) -> None:
        try:
            abort = AbortFlag(self.flags.page if self.flags else None)
            self._runtime = runtime = LlamaRuntime(
                model_path, self.settings, n_seqs=self.settings.slots + 1, abort=abort
            )
        except EngineError as exc:
            self._loaded.set_exception(exc)
            self._fail_queued(exc)
            return
        self._loaded.set_result(runtime.info)
        while (job := self._queue.get()) is not None:
            self._serve(job)
        with self._lock:
            slots = self.slots.all()
        for slot in slots:  # a restart finds them parked
            self._park(slot)
        runtime.close()

    def _fail_queued(self, exc: Exception) -> None:
        while (job := self._queue.get()) is not None:
            if isinstance(job, GenerationJob):
                job.future.set_exception(exc)

    def _serve(self, job: GenerationJob | _Release) -> None:
        if isinstance(job, _Release):
            self._release_slot(job.key)
            return
        # A RUNNING future can no longer be cancelled by its waiter (asyncio.wrap_future tries
        # to when the awaiting task is cancelled); cancellation then goes through the job.
        started = job.future.set_running_or_notify_cancel()
        with self._lock:
            cancelled = not started or job.cancel_event.is_set()
            if not cancelled:
                self._running = job
                if self.flags:
                    self.flags.running = job.id
                self._rt.abort.set(False)
        if cancelled:
            generation = self._cancelled_record(job)
            if not job.background:  # a warm-up that never ran did nothing worth a record
                self._record(job.key, generation.record)
            if started:
                job.future.set_result(generation)
            return
        try:
            generation = self._generate(job)
        except Exception as exc:  # the engine thread must outlive any one request
            log.error("generation failed: %s", exc, exc_info=not isinstance(exc, EngineError))
            job.future.set_exception(exc)
        else:
            self._record(job.key, generation.record)
            job.future.set_result(generation)
        finally:
            with self._lock:
                self._running = None
                if self._latest.get(job.key) is job:
                    del self._latest[job.key]

    def _record(self, key: str, record: RequestRecord) -> None:
        with self._lock:
            self.records.append((key, record))
        count_generation(record)

    def _cancelled_record(self, job: GenerationJob) -> Generation:
        record = RequestRecord(
            short_name(job.key), -1, len(job.tokens), 0, 0, 0, 0, 0.0, 0.0, job.outcome_if_cancelled
        )
        return Generation("", record)

    def _release_slot(self, key: str) -> None:
        with self._lock:
            slot = self.slots.release(key)
        if slot is not None:
            self._park(slot)
            self._rt.seq_rm(slot.seq, 0)

    def _park(self, slot: Slot) -> None:
        """Write `slot`'s KV cache to the park folder (when worth it); never fails a request."""
        if self.park is None or len(slot.tokens) < MIN_PARK_TOKENS:
            return
        try:
            self.park.park(slot.key, slot.tokens, self._rt.seq_state(slot.seq))
        except OSError as exc:
            log.warning("could not park a KV slot: %s", exc)

    def _restore(self, slot: Slot, prompt: list[int]) -> int:
        """Load `slot.key`'s parked KV cache into the empty slot when it shares a useful prefix
        with `prompt` and the measured speeds say loading it beats evaluating `prompt`; the
        tokens restored (the common prefix is kept by the usual reuse)."""
        if self.park is None:
            return 0
        started = time.perf_counter()
        try:
            size = self.park.size(slot.key)
            if size is None or not self.speeds.restore_pays(len(prompt), size):
                return 0
            parked = self.park.take(slot.key)
        except OSError as exc:
            log.warning("could not read a parked KV slot: %s", exc)
            return 0
        if parked is None or _common_prefix(parked.tokens, prompt) < MIN_PARK_TOKENS:
            return 0
        if not self._rt.set_seq_state(slot.seq, parked.state):
            return 0
        self.speeds.note_restore(size, time.perf_counter() - started)
        slot.tokens = list(parked.tokens)
        return len(parked.tokens)

    def _generate(self, job: GenerationJob) -> Generation:
        started = time.perf_counter()
        if not job.tokens:
            raise EngineError("empty prompt")
        if len(job.tokens) + job.max_tokens > self._rt.n_ctx:
            raise EngineError(
                f"prompt of {len(job.tokens)} tokens does not fit the context of "
                f"{self._rt.n_ctx}; lower the completion token budgets"
            )
        with self._lock:
            slot, evicted = self.slots.acquire(job.key)
        if evicted is not None:
            self._park(evicted)
            self._rt.seq_rm(evicted.seq, 0)
        run = _Run(self, slot, job, started)
        if not slot.tokens:
            run.restored = self._restore(slot, job.tokens)
        try:
            text = run.prompt_then_generate()
            outcome = "ok"
        except Aborted:
            text, outcome = "", job.outcome_if_cancelled
        finally:
            run.resync()
        return Generation(text, run.record(outcome))


class _Run:
    """One request on the engine thread: prompt evaluation with reuse, then sampling."""

    def __init__(self, engine: Engine, slot: Slot, job: GenerationJob, started: float) -> None:
        self.engine, self.slot, self.job, self.started = engine, slot, job, started
        self.rt = engine._rt
        self.scratch_seq = engine.settings.slots  # the one sequence no document owns
        self.reused = self.shifted = self.evaluated = self.generated = self.restored = 0
        self.first_token_at: float | None = None
        self._target: list[int] | None = None

    def prompt_then_generate(self) -> str:
        self._load_prompt()
        return self._sample_loop()

    def _load_prompt(self) -> None:
        prompt, slot = self.job.tokens, self.slot
        common = min(_common_prefix(slot.tokens, prompt), len(prompt) - 1)
        self.reused = common
        tail = self.job.tail_start
        old_tail = self._reusable_tail(common)
        slot.tail_start = None  # unknown until the prompt is fully in the cache
        if old_tail is not None and tail is not None:
            self._shift_tail(common, old_tail, tail)
        else:
            self._truncate(common)
            slot.tail_drift = 0
        self._extend(prompt, len(prompt))
        slot.tail_start = tail

    def _reusable_tail(self, common: int) -> int | None:
        """Where the cached tail starts, when it may be shifted rather than evaluated again."""
        slot, tail = self.slot, self.job.tail_start
        # common == tail: the prefix lost whole tokens at its end (a backspace); the marker at
        # `tail` is not in the common prefix, so the cached tail must still move.
        if tail is None or slot.tail_start is None or common > tail:
            return None
        cached = slot.tokens[slot.tail_start : slot.tail_start + 1]
        if cached != self.job.tokens[tail : tail + 1]:  # not the same marker token: no tail
            return None
        allowed = (
            self.engine.settings.cacheShift
            and self.rt.can_shift()
            and slot.tail_drift + (tail - common) <= MAX_SHIFT_DRIFT
        )
        return slot.tail_start if allowed else None

    def _shift_tail(self, common: int, old_tail: int, tail: int) -> None:
        """Keep the cached FIM suffix: park it on the scratch sequence, evaluate the changed
        prefix, move the suffix to its new position and hand it back to the slot.

        llama.cpp requires each decode to continue right after a sequence's last position, so
        the suffix cannot stay in place while the prefix before it is evaluated again.
        """
        prompt, slot = self.job.tokens, self.slot
        length = min(_common_prefix(slot.tokens[old_tail:], prompt[tail:]), len(prompt) - tail - 1)
        if length < MIN_SHIFT_CHUNK:
            self._truncate(common)
            slot.tail_drift = 0
            return
        seq, scratch = slot.seq, self.scratch_seq
        self.rt.seq_cp(seq, scratch, old_tail, old_tail + length)
        try:
            self._truncate(common)
            self._extend(prompt, tail)
            self.rt.seq_shift(scratch, old_tail, old_tail + length, tail - old_tail)
            self.rt.seq_cp(scratch, seq, tail, tail + length)
            slot.tokens.extend(prompt[tail : tail + length])
            slot.tail_drift += tail - common
            self.shifted = length
        finally:
            self.rt.seq_rm(scratch, 0)

    def _truncate(self, keep: int) -> None:
        if len(self.slot.tokens) > keep:
            self.rt.seq_rm(self.slot.seq, keep)
            del self.slot.tokens[keep:]

    def _extend(self, target: list[int], upto: int) -> None:
        """Decode target[len(slot.tokens):upto], making room in the KV cache when it is full."""
        while len(self.slot.tokens) < upto:
            start = len(self.slot.tokens)
            pending = target[start:upto]
            began = time.perf_counter()
            try:
                self.rt.decode(pending, self.slot.seq, start)
            except NoKvSpace:
                self.resync_from(target)
                self._make_room()
                continue
            except Aborted:
                self.resync_from(target)
                if self.engine.cancelled(self.job):
                    raise
                # The other process aborted the request it saw running, which had just ended.
                self.rt.abort.set(False)
                continue
            self.engine.speeds.note_eval(len(pending), time.perf_counter() - began)
            self.slot.tokens.extend(pending)
            self.evaluated += len(pending)

    def _make_room(self) -> None:
        """The unified KV cache is full: clear the least recently used other slot."""
        with self.engine._lock:
            victim = self.engine.slots.least_recent_other(self.slot.key)
        if victim is None:
            raise EngineError("the prompt does not fit the KV cache; raise engine.contextSize")
        self.engine._park(victim)
        self.rt.seq_rm(victim.seq, 0)
        victim.tokens.clear()

    def resync_from(self, target: list[int]) -> None:
        """After a failed decode, what llama.cpp kept is a prefix of what we asked for."""
        held = self.rt.cached_length(self.slot.seq)
        before = len(self.slot.tokens)
        if held > before:
            self.evaluated += held - before
            self.slot.tokens.extend(target[before:held])

    def resync(self) -> None:
        del self.slot.tokens[self.rt.cached_length(self.slot.seq) :]

    def _sample_loop(self) -> str:
        job, rt = self.job, self.rt
        sampler = Sampler(job.temperature)
        out = bytearray()
        try:
            for i in range(job.max_tokens):
                if self.engine.cancelled(job):
                    raise Aborted
                token = sampler.sample(rt)
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                if rt.is_eog(token) or token in job.stop_tokens:
                    break
                self.generated += 1
                out += rt.piece(token)
                if job.should_stop and job.should_stop(out.decode(errors="ignore")):
                    break
                if i + 1 < job.max_tokens:
                    self._extend_generated(token)
        finally:
            sampler.close()
        return out.decode(errors="ignore")

    def _extend_generated(self, token: int) -> None:
        # One growing target for the whole generation: copying the cached prompt for every
        # generated token would cost O(prompt) per token.
        if self._target is None:
            self._target = list(self.slot.tokens)
        self._target.append(token)
        evaluated = self.evaluated
        self._extend(self._target, len(self._target))
        self.evaluated = evaluated  # generated tokens are counted apart from the prompt's

    def record(self, outcome: str) -> RequestRecord:
        now = time.perf_counter()
        first = self.first_token_at or now
        return RequestRecord(
            document=short_name(self.job.key),
            slot=self.slot.seq,
            prompt_tokens=len(self.job.tokens),
            reused_tokens=self.reused + self.shifted,
            shifted_tokens=self.shifted,
            evaluated_tokens=self.evaluated,
            restored_tokens=min(self.restored, self.reused),
            generated_tokens=self.generated,
            ttft_ms=round((first - self.started) * 1000, 2),
            total_ms=round((now - self.started) * 1000, 2),
            outcome=outcome,
        )


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
