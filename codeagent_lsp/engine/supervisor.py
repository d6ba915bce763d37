"""The language server's side of the llama.cpp worker: start it, talk to it, and survive it.

`Supervisor` offers what `Engine` offers (submit, cancel, release, records, stats), but the model
runs in a child process (`engine/worker.py`). Tokens are counted here with a vocabulary-only
load, so the budgets never wait on the worker; it is made once a worker has loaded the model,
so llama.cpp's parser has read the file without failing first (a GGUF that trips its checks,
which abort the process, costs a worker, never the server). When the worker dies:

- every request in flight gets an `EngineError` at once, naming the cause in words;
- the user is told once (`notify`), and the worker restarts after a backoff;
- a crash at load or before the first token steps down to a safer configuration, in order:
  weight repacking off, one thread, no GPU offload (the AMX fault of some VMs is the first);
- a crash loop (no safer configuration left, or `MAX_CRASHES` within `CRASH_WINDOW_S`) stops
  the worker for good with a message, instead of spinning.

Ollama's runner processes and Tabby's llama-server child are the precedents.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp.llama_cpp as C

import codeagent_lsp
from codeagent_lsp.engine import faults, models, parking
from codeagent_lsp.engine.backend import Generation, RequestRecord
from codeagent_lsp.engine.engine import GenerationJob
from codeagent_lsp.engine.llama import EngineError, ModelInfo, VocabularyOnly
from codeagent_lsp.engine.protocol import (
    Message,
    ProtocolError,
    SharedFlags,
    read_message,
    write_message,
)
from codeagent_lsp.engine.slots import short_name
from codeagent_lsp.metrics import count_generation
from codeagent_lsp.security.redact import redact
from codeagent_lsp.settings import EngineSettings

log = logging.getLogger(__name__)

MAX_CRASHES = 5
CRASH_WINDOW_S = 300.0
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 10.0
STDERR_TAIL = 20
"""Lines of the worker's stderr kept for the message after a crash."""

_SIGNAL_CAUSES = {
    signal.SIGILL: "llama.cpp stopped with an illegal instruction: this build uses CPU "
    "instructions that this machine cannot run",
    signal.SIGKILL: "the model worker was killed (SIGKILL), most often by the out-of-memory "
    "killer: lower codeagent.engine.contextSize or slots, or give it more memory",
    signal.SIGSEGV: "llama.cpp crashed with a segmentation fault (a damaged model file, a "
    "llama.cpp bug or a GPU driver fault)",
    signal.SIGBUS: "llama.cpp crashed with a bus error (the model file changed or shrank while "
    "in use?)",
    signal.SIGABRT: "llama.cpp aborted: an internal check failed or memory ran out",
    signal.SIGFPE: "llama.cpp crashed with an arithmetic fault",
}
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
_ENV_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONHOME", "LD_LIBRARY_PATH")
_ENV_PREFIXES = ("CUDA_", "GGML_", "HIP_", "ROCR_", "NVIDIA_", "OMP_")


_OUT_OF_MEMORY = ("MemoryError", "can't start new thread", "bad_alloc", "failed to allocate")
"""What the worker's stderr says when an allocation failed: Python, C++, ggml."""


def memory_cap_hint(cap_mb: int) -> str:
    """The clause that names the memory cap as the cause ("" without a cap)."""
    return f"; codeagent.engine.memoryLimitMB caps it at {cap_mb} MiB" if cap_mb > 0 else ""


def describe_exit(returncode: int, stderr_tail: list[str], memory_limit_mb: int = 0) -> str:
    """The worker's end in words for the user (a negative return code names the signal); with a
    memory cap, a death from a failed allocation names the cap."""
    cause = _describe_status(returncode, stderr_tail)
    ran_out = returncode == -signal.SIGABRT or any(
        sign in line for line in stderr_tail for sign in _OUT_OF_MEMORY
    )
    return cause + (memory_cap_hint(memory_limit_mb) if ran_out else "")


def _describe_status(returncode: int, stderr_tail: list[str]) -> str:
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"the model worker was ended by signal {-returncode}"
        return _SIGNAL_CAUSES.get(sig, f"the model worker was ended by {sig.name}")
    last = redact(stderr_tail[-1])[:200] if stderr_tail else ""
    return f"the model worker exited with status {returncode}" + (f" ({last})" if last else "")


@dataclass(frozen=True)
class WorkerConfig:
    """What the supervisor may change to get a crashing build to run."""

    repack: bool
    threads: int
    """0 = all cores."""
    gpu_layers: int

    def safer(self, can_offload: bool) -> tuple[WorkerConfig, str] | None:
        """The next configuration to try after a crash at load or first decode, and its name."""
        if self.repack:
            return dataclasses.replace(self, repack=False), "weight repacking off"
        if self.threads != 1:
            return dataclasses.replace(self, threads=1), "one thread"
        if can_offload and self.gpu_layers != 0:
            return dataclasses.replace(self, gpu_layers=0), "no GPU offload"
        return None

    def apply(self, settings: EngineSettings) -> EngineSettings:
        return dataclasses.replace(
            settings, repack=self.repack, threads=self.threads, nGpuLayers=self.gpu_layers
        )

    def to_json(self) -> dict[str, object]:
        return {"repack": self.repack, "threads": self.threads, "gpuLayers": self.gpu_layers}


@dataclass
class _Pending:
    job: GenerationJob
    sent_at: float
    text: str = ""
    stopped_at: str | None = None
    """The text when the server's post-processing said stop (the worker may run a token on)."""


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    start: int
    stderr: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL)
    )
    decoded: bool = False
    """A token or a result came back: this build runs on this machine."""
    garbled: str = ""
    """Why the worker was killed for a malformed message, if it was."""
    stderr_done: threading.Event = field(default_factory=threading.Event)


class Supervisor:
    """One llama.cpp worker process per loaded model; thread-safe."""

    def __init__(
        self,
        model: Path | models.OpenModel,
        settings: EngineSettings,
        notify: Callable[[str], None] | None = None,
        *,
        record_limit: int = 256,
    ) -> None:
        """`model`: a path, or a file opened and checked already (`models.open_model`), which
        this process and its workers then load through a descriptor of its own."""
        if not settings.parkDir:  # the worker's scrubbed environment has no XDG_CACHE_HOME
            settings = dataclasses.replace(settings, parkDir=str(parking.default_folder()))
        self._model_fd: int | None = None
        self.model_path = self.source = model if isinstance(model, Path) else model.source
        if isinstance(model, models.OpenModel):
            self._model_fd = os.dup(model.fd)
            self.model_path = models.fd_path(self._model_fd)
        self.settings, self.notify = settings, notify
        self._vocab: VocabularyOnly | None = None
        self.config = WorkerConfig(settings.repack, settings.threads, settings.nGpuLayers)
        self.records: collections.deque[tuple[str, RequestRecord]] = collections.deque(
            maxlen=record_limit
        )
        self.problem: str | None = None
        """Why the worker stopped for good; None while it runs or restarts."""
        self._told_cause: str | None = None
        """The crash cause the user heard of last, until a worker serves a request again."""
        self._flags = SharedFlags.create()
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._backlog: list[GenerationJob] = []
        self._slot_rows: list[tuple[str, dict[str, object]]] = []
        self._crashes: collections.deque[float] = collections.deque()
        self._starts = 0
        self._state = "starting"
        self._proc: _Process | None = None
        self._info: ModelInfo | None = None
        self._loaded: concurrent.futures.Future[ModelInfo] = concurrent.futures.Future()
        self._restart_timer: threading.Timer | None = None
        self._spawn()

    # --- the Engine interface -------------------------------------------------------------------

    def wait_loaded(self, timeout: float | None = None) -> ModelInfo:
        """Model information once a worker loaded it; raises EngineError when none could."""
        return self._loaded.result(timeout)

    def tokenize(self, text: str) -> list[int]:
        """Raises EngineError when no worker could load the model, or after close()."""
        return self._vocabulary().tokenize(text)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def token_id(self, text: str) -> int | None:
        return self._vocabulary().token_id(text)

    def _vocabulary(self) -> VocabularyOnly:
        self.wait_loaded()  # the vocabulary is loaded before the load is settled
        assert self._vocab is not None
        return self._vocab

    def submit(self, job: GenerationJob) -> concurrent.futures.Future[Generation]:
        """Send `job` to the worker (or hold it while the worker restarts); the worker
        supersedes an older job for the same document."""
        if not job.future.set_running_or_notify_cancel():
            return job.future
        with self._lock:
            if self._state in ("stopped", "closed"):
                job.future.set_exception(EngineError(self.problem or "the engine was closed"))
                return job.future
            job.id = next(self._ids)
            if self._state == "ready":
                self._dispatch(job)
            else:
                self._backlog.append(job)
        return job.future

    def cancel(self, job: GenerationJob, outcome: str = "cancelled") -> None:
        job.cancel(outcome)
        with self._lock:
            if job in self._backlog:
                self._backlog.remove(job)
                self._finish(job, _cancelled(job))
            elif job.id in self._pending:
                self._flags.cancel_running(job.id)  # stops a prompt evaluation at once
                self._send({"op": "cancel", "id": job.id, "outcome": outcome})

    def release(self, key: str) -> None:
        """A document was closed: free its slot in the worker."""
        with self._lock:
            self._slot_rows = [(k, row) for k, row in self._slot_rows if k != key]
            if self._state == "ready":
                self._send({"op": "release", "key": key})

    def release_owner(self, owner: str) -> None:
        """A client of a shared node left: cancel its requests and free its slots."""
        with self._lock:
            jobs = [p.job for p in self._pending.values() if p.job.key.startswith(owner)]
            jobs += [job for job in self._backlog if job.key.startswith(owner)]
            self._slot_rows = [(k, r) for k, r in self._slot_rows if not k.startswith(owner)]
            if self._state == "ready":
                self._send({"op": "releaseOwner", "owner": owner})
        for job in jobs:
            self.cancel(job)

    def add_record(self, record: RequestRecord, owner: str = "") -> None:
        """Record a request answered without the model (a reused suggestion)."""
        self._record(owner, record)

    def stats(self, owner: str = "") -> dict[str, object]:
        """Records and slots of the keys that start with `owner`, and the worker's state."""
        with self._lock:
            records = [r.to_json() for key, r in self.records if key.startswith(owner)]
            slots = [row for key, row in self._slot_rows if key.startswith(owner)]
            proc = self._proc
            worker = {
                "state": self._state,
                "pid": proc.popen.pid if proc and self._state == "ready" else None,
                "starts": self._starts,
                "crashes": len(self._crashes),
                "config": self.config.to_json(),
                "problem": self.problem,
            }
        return {"records": records, "slots": slots, "worker": worker}

    def close(self) -> None:
        """Stop the worker (it frees the model) and fail what is still waiting."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
            self.problem = "the engine was closed"
            if self._restart_timer:
                self._restart_timer.cancel()
            proc = self._proc
            self._fail_all(EngineError(self.problem))
            self._settle_loaded(EngineError(self.problem))
        if proc is not None:
            self._stop_process(proc)
        self._flags.close()
        if self._vocab is not None:
            self._vocab.close()
        self._close_model_fd()

    def _close_model_fd(self) -> None:
        if self._model_fd is not None:
            os.close(self._model_fd)
            self._model_fd = None

    # --- the worker process ---------------------------------------------------------------------

    def _spawn(self) -> None:
        self._starts += 1
        self._flags.running = 0
        self._flags.page[0] = 0
        popen = subprocess.Popen(
            [sys.executable, "-m", "codeagent_lsp.engine.worker", str(self._flags.fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(self._flags.fd, *([] if self._model_fd is None else [self._model_fd])),
            env=_worker_environment(),
            cwd="/",
            start_new_session=True,  # the server decides when it stops, not the terminal
        )
        proc = _Process(popen, self._starts)
        self._proc = proc
        load = {
            "op": "load",
            "model": str(self.model_path),
            "modelSha256": models.model_sha256(self.model_path),
            "settings": dataclasses.asdict(self.config.apply(self.settings)),
            "start": proc.start,
        }
        self._send(load)
        log.info("model worker %d started (pid %d, %s)", proc.start, popen.pid, self.config)
        threading.Thread(target=self._read_stderr, args=(proc,), daemon=True).start()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _send(self, message: Message) -> None:
        proc = self._proc
        if proc is None or proc.popen.stdin is None:
            return
        # A worker that is gone makes this fail; its reader thread reports why.
        with contextlib.suppress(ValueError, OSError):
            write_message(proc.popen.stdin, message)

    def _dispatch(self, job: GenerationJob) -> None:
        self._pending[job.id] = _Pending(job, time.perf_counter())
        self._send(
            {
                "op": "generate",
                "id": job.id,
                "key": job.key,
                "tokens": job.tokens,
                "tailStart": job.tail_start,
                "maxTokens": job.max_tokens,
                "temperature": job.temperature,
                "stopTokens": sorted(job.stop_tokens),
                "background": job.background,
            }
        )

    def _read(self, proc: _Process) -> None:
        stdout = proc.popen.stdout
        assert stdout is not None
        try:
            while (message := read_message(stdout)) is not None:
                self._on_message(proc, message)
        except ProtocolError as exc:
            proc.garbled = str(exc)
            proc.popen.kill()
        except Exception as exc:  # a reader that dies would leave every request hanging
            log.exception("model worker %d: unexpected message", proc.start)
            proc.garbled = type(exc).__name__
            proc.popen.kill()
        self._ended(proc)

    def _read_stderr(self, proc: _Process) -> None:
        stderr = proc.popen.stderr
        assert stderr is not None
        for raw in stderr:
            line = raw.decode(errors="replace").rstrip()
            proc.stderr.append(line)
            level, _, text = line.partition(" ")
            log.log(
                _LEVELS.get(level, logging.DEBUG), "worker: %s", text if level in _LEVELS else line
            )
        proc.stderr_done.set()

    def _on_message(self, proc: _Process, m: Message) -> None:
        op = m["op"]
        with self._lock:
            if op == "loaded":
                # Named by the path it was opened by, not the descriptor it was loaded through.
                self._on_loaded(proc, ModelInfo(**{**m["info"], "path": str(self.source)}))
            elif op == "loadFailed":
                self._give_up(str(m["message"]), tell=False, final=False)
            elif op == "piece":
                proc.decoded = True
                self._on_piece(m["id"], m["text"])
            elif op in ("result", "error"):
                if op == "result":
                    proc.decoded, self._told_cause = True, None
                self._on_answer(m)

    def _on_loaded(self, proc: _Process, info: ModelInfo) -> None:
        if self._state in ("closed", "stopped"):
            return
        if self._vocab is None:
            try:
                self._vocab = VocabularyOnly(self.model_path)
            except EngineError as exc:
                self._give_up(str(exc), tell=False, final=False)
                return
        self._state, self._info = "ready", info
        log.info("model worker %d ready: %s on %s", proc.start, info.name, info.device)
        self._settle_loaded(info)
        backlog, self._backlog = self._backlog, []
        for job in backlog:
            self._dispatch(job)

    def _on_piece(self, job_id: int, text: str) -> None:
        pending = self._pending.get(job_id)
        if pending is None or pending.stopped_at is not None:
            return
        pending.text += text
        should_stop = pending.job.should_stop
        if should_stop is not None and should_stop(pending.text):
            pending.stopped_at = pending.text
            self._send({"op": "stop", "id": job_id})

    def _on_answer(self, m: Message) -> None:
        pending = self._pending.pop(m["id"], None)
        if pending is None:
            return
        job = pending.job
        if m["op"] == "error":
            self._finish(job, EngineError(str(m["message"])))
            return
        record = RequestRecord(**m["record"])
        round_trip = (time.perf_counter() - pending.sent_at) * 1000
        record.boundary_ms = round(max(0.0, round_trip - m["workerMs"]), 3)
        self._slot_rows = [(str(k), dict(row)) for k, row in m["slots"]]
        text = pending.stopped_at if pending.stopped_at is not None else m["text"]
        self._finish(job, Generation(text, record))

    def _finish(self, job: GenerationJob, outcome: Generation | Exception) -> None:
        future = job.future
        if isinstance(outcome, Generation) and not _never_ran_warm_up(job, outcome.record):
            self._record(job.key, outcome.record)
        if future.done():
            return
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _record(self, key: str, record: RequestRecord) -> None:
        with self._lock:
            self.records.append((key, record))
        count_generation(record)

    # --- crashes ----------------------------------------------------------------------------------

    def _ended(self, proc: _Process) -> None:
        returncode = proc.popen.wait()
        proc.stderr_done.wait(timeout=2)
        with self._lock:
            if self._proc is not proc or self._state in ("closed", "stopped"):
                return
            self._crashed(proc, returncode)

    def _crashed(self, proc: _Process, returncode: int) -> None:
        cause = (
            f"the model worker sent a malformed message ({proc.garbled}) and was stopped"
            if proc.garbled
            else describe_exit(returncode, list(proc.stderr), self.settings.memoryLimitMB)
        )
        log.error("model worker %d ended (status %d): %s", proc.start, returncode, cause)
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > CRASH_WINDOW_S:
            self._crashes.popleft()
        # Before a first load, whoever waits for it reports the failure (no second message).
        tell = self._loaded.done()
        if not proc.decoded:
            step = self.config.safer(bool(C.llama_supports_gpu_offload()))
            if step is None:
                self._give_up(f"{cause}; it crashed in every safer configuration too", tell=tell)
                return
            self.config, change = step
            action = f"restarting it with {change}"
        elif len(self._crashes) >= MAX_CRASHES:
            self._give_up(f"{cause}; it crashed {len(self._crashes)} times in a few minutes")
            return
        else:
            action = "restarting it"
        # The user hears why before the requests in flight fail with the same cause; once per
        # cause, not once per restart (each failed request carries the cause too).
        if cause != self._told_cause:
            self._told_cause = cause
            self._tell(f"{cause}. {action[0].upper()}{action[1:]}; other features keep working.")
        self._fail_all(EngineError(cause))
        log.warning("model worker: %s (%s)", action, self.config)
        self._state = "restarting"
        backoff = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (len(self._crashes) - 1))
        self._restart_timer = threading.Timer(backoff, self._restart)
        self._restart_timer.daemon = True
        self._restart_timer.start()

    def _restart(self) -> None:
        with self._lock:
            if self._state == "restarting":
                self._state = "starting"
                self._spawn()

    def _give_up(self, reason: str, *, tell: bool = True, final: bool = True) -> None:
        """No more restarts: say why (`tell`); requests fail with the reason until settings
        change. `final`: the reason is a crash loop, which says that completions are off."""
        self._state = "stopped"
        self.problem = (
            f"{reason}. Completions are off until the server restarts or codeagent.engine "
            "settings change; navigation, hover and symbols keep working."
            if final
            else reason
        )
        log.error("model worker stopped: %s", self.problem)
        if tell:
            self._tell(self.problem)
        self._fail_all(EngineError(self.problem))
        self._settle_loaded(EngineError(self.problem))
        if self._proc is not None:
            threading.Thread(target=self._stop_process, args=(self._proc,), daemon=True).start()

    def _fail_all(self, error: EngineError) -> None:
        pending, self._pending = self._pending, {}
        backlog, self._backlog = self._backlog, []
        for job in [p.job for p in pending.values()] + backlog:
            self._finish(job, error)

    def _settle_loaded(self, outcome: ModelInfo | EngineError) -> None:
        if self._loaded.done():
            return
        if isinstance(outcome, EngineError):
            self._loaded.set_exception(outcome)
        else:
            self._loaded.set_result(outcome)

    def _tell(self, message: str) -> None:
        if self.notify is not None:
            try:
                self.notify(message)
            except Exception:  # telling the user must never break recovery
                log.exception("could not show a message")

    def _stop_process(self, proc: _Process) -> None:
        try:
            write_message(proc.popen.stdin, {"op": "close"})  # type: ignore[arg-type]
            proc.popen.stdin.close()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()


def _never_ran_warm_up(job: GenerationJob, record: RequestRecord) -> bool:
    """A warm-up stopped before it started: no work done, no record (as in the engine)."""
    return job.background and record.slot == -1


def _cancelled(job: GenerationJob) -> Generation:
    record = RequestRecord(
        short_name(job.key), -1, len(job.tokens), 0, 0, 0, 0, 0.0, 0.0, job.outcome_if_cancelled
    )
    return Generation("", record)


def _worker_environment() -> dict[str, str]:
    """Only what llama.cpp and Python need: no tokens, proxies or secrets of the server's."""
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEPT or k.startswith(_ENV_PREFIXES)}
    package_root = str(Path(codeagent_lsp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p
    )
    env["CODEAGENT_WORKER_LOG"] = logging.getLevelName(
        max(logging.getLogger("codeagent_lsp").getEffectiveLevel(), logging.INFO)
    )
    if faults.ENV in os.environ:
        env[faults.ENV] = os.environ[faults.ENV]
    return env
