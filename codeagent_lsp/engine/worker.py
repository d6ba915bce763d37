"""The llama.cpp worker: a child process that owns the model, its context and the KV slots.

Started by `supervisor.Supervisor` as `python -m codeagent_lsp.engine.worker FLAGS_FD`. llama.cpp
is native code: a fault there (an instruction this CPU cannot run, a hostile GGUF, an
out-of-memory kill, a GPU driver fault) ends this process, never the language server.

Least privilege: it gets a scrubbed environment, no network (every socket is refused), an
optional cap on its private memory, and learns the model path only in its `load` message, which
the server sends after the policy's checks. Its stdout carries protocol messages only: fd 1 is
pointed at stderr so that nothing native can write into the protocol.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import dataclasses
import logging
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import IO

import llama_cpp
import llama_cpp.llama_cpp as C

from codeagent_lsp.engine import faults, parking
from codeagent_lsp.engine.backend import Generation
from codeagent_lsp.engine.engine import Engine, GenerationJob
from codeagent_lsp.engine.llama import EngineError
from codeagent_lsp.engine.parking import SlotPark
from codeagent_lsp.engine.protocol import Message, SharedFlags, read_message, write_message
from codeagent_lsp.engine.supervisor import memory_cap_hint
from codeagent_lsp.settings import EngineSettings

log = logging.getLogger("codeagent_lsp.engine.worker")


class _Outbox:
    """Messages to the server, from the reader thread and the engine thread alike."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            write_message(self._stream, message)


class Worker:
    """Turns protocol messages into Engine calls and results back into messages."""

    def __init__(self, engine: Engine, outbox: _Outbox) -> None:
        self.engine, self.outbox = engine, outbox
        self.jobs: dict[int, GenerationJob] = {}
        self.stops: dict[int, threading.Event] = {}

    def serve(self, stream: IO[bytes]) -> None:
        """Until the server closes our stdin (it stopped, or wants us gone)."""
        while (message := read_message(stream)) is not None and message["op"] != "close":
            getattr(self, "_on_" + message["op"])(message)

    def _on_generate(self, m: Message) -> None:
        received = time.perf_counter()
        stop = threading.Event()
        sent = 0

        def should_stop(text: str) -> bool:
            # The server's post-processing decides when to stop; it sees each new piece of
            # text (and a piece tells it that this build decodes on this machine).
            nonlocal sent
            self.outbox.send({"op": "piece", "id": m["id"], "text": text[sent:]})
            sent = len(text)
            return stop.is_set()

        job = GenerationJob(
            key=m["key"],
            tokens=m["tokens"],
            tail_start=m["tailStart"],
            max_tokens=m["maxTokens"],
            temperature=m["temperature"],
            stop_tokens=frozenset(m["stopTokens"]),
            should_stop=should_stop,
            id=m["id"],
            background=m["background"],
        )
        self.jobs[job.id], self.stops[job.id] = job, stop
        self.engine.submit(job).add_done_callback(lambda f: self._answer(job.id, f, received))

    def _answer(
        self, job_id: int, future: concurrent.futures.Future[Generation], received: float
    ) -> None:
        self.jobs.pop(job_id, None)
        self.stops.pop(job_id, None)
        try:
            generation = future.result()
        except Exception as exc:
            self.outbox.send({"op": "error", "id": job_id, "message": str(exc)})
            return
        self.outbox.send(
            {
                "op": "result",
                "id": job_id,
                "text": generation.text,
                "record": dataclasses.asdict(generation.record),
                "slots": self.engine.slot_rows(),
                "workerMs": (time.perf_counter() - received) * 1000,
            }
        )

    def _on_cancel(self, m: Message) -> None:
        if (job := self.jobs.get(m["id"])) is not None:
            job.outcome_if_cancelled = m.get("outcome", "cancelled")
            self.engine.cancel(job)

    def _on_stop(self, m: Message) -> None:
        if (stop := self.stops.get(m["id"])) is not None:
            stop.set()

    def _on_release(self, m: Message) -> None:
        self.engine.release(m["key"])

    def _on_releaseOwner(self, m: Message) -> None:
        self.engine.release_owner(m["owner"])


def _refuse_network(event: str, _args: tuple[object, ...]) -> None:
    # The worker never needs a network; any socket (from any library) is refused.
    if event.startswith("socket.") and event not in ("socket.gethostname",):
        raise PermissionError(f"the model worker has no network ({event})")


class _ArgCmp(ctypes.Structure):
    """libseccomp's `struct scmp_arg_cmp`."""

    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO_EACCES = 0x00050000 | 13
_SCMP_CMP_EQ = 4
_NETWORK_FAMILIES = (2, 10, 17)  # AF_INET, AF_INET6, AF_PACKET


def _deny_network_sockets() -> bool:
    """A seccomp filter: socket() fails with EACCES for network families, so native code
    (llama.cpp, a GPU runtime) cannot open a connection either; local (AF_UNIX) sockets stay.

    Written against libseccomp with ctypes: the one Python binding on the index (pyseccomp) is
    unmaintained since 2021. Returns False where libseccomp is missing (the audit hook still
    refuses sockets from Python code)."""
    name = ctypes.util.find_library("seccomp")
    if not name:
        return False
    lib = ctypes.CDLL(name)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    )
    lib.seccomp_load.argtypes = lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        return False
    try:
        syscall = lib.seccomp_syscall_resolve_name(b"socket")
        for family in _NETWORK_FAMILIES:
            cmp = _ArgCmp(0, _SCMP_CMP_EQ, family, 0)
            if lib.seccomp_rule_add_array(ctx, _SCMP_ACT_ERRNO_EACCES, syscall, 1, cmp) != 0:
                return False
        return lib.seccomp_load(ctx) == 0
    finally:
        lib.seccomp_release(ctx)


def _limit_memory(megabytes: int) -> None:
    if megabytes > 0:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _park(settings: EngineSettings, load: Message) -> SlotPark | None:
    """Where this worker parks KV slots; None when parking is off or its folder unusable."""
    if not settings.parkSlots:
        return None
    root = Path(settings.parkDir)  # resolved by the server (our environment is scrubbed)
    # What changes the bytes of a KV cache: the model, the attention kernel, where it lives.
    device = "gpu" if C.llama_supports_gpu_offload() and settings.nGpuLayers != 0 else "cpu"
    kv_fingerprint = parking.fingerprint(
        load["modelSha256"], settings.flashAttention, device, llama_cpp.__version__
    )
    try:
        return SlotPark(
            root,
            kv_fingerprint,
            max_bytes=settings.parkMaxMB * 1024 * 1024,
            max_age_s=settings.parkMaxAgeHours * 3600,
        )
    except OSError as exc:
        log.warning("KV slots are not parked: %s", exc)
        return None


def main(argv: list[str]) -> int:
    inbox = sys.stdin.buffer
    outbox = _Outbox(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)  # native prints go to stderr, never into the protocol
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("CODEAGENT_WORKER_LOG", "WARNING"),
        format="%(levelname)s %(name)s: %(message)s",
    )
    sys.addaudithook(_refuse_network)
    if not _deny_network_sockets():
        log.info("libseccomp is missing: only Python code is kept off the network")
    flags = SharedFlags.attach(int(argv[0]))
    load = read_message(inbox)
    if load is None or load["op"] != "load":
        return 2
    settings = EngineSettings(**load["settings"])
    _limit_memory(settings.memoryLimitMB)
    fault = faults.from_environment(start=load["start"], repack=settings.repack)
    if fault:
        fault.at_load()
    engine = Engine(Path(load["model"]), settings, flags=flags, park=_park(settings, load))
    try:
        info = engine.wait_loaded()
    except EngineError as exc:
        hint = memory_cap_hint(settings.memoryLimitMB)
        outbox.send({"op": "loadFailed", "message": f"{exc}{hint}"})
        return 0
    if fault:
        fault.arm(engine.runtime)
    outbox.send({"op": "loaded", "info": dataclasses.asdict(info)})
    try:
        Worker(engine, outbox).serve(inbox)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
