"""The llama.cpp worker process and its supervisor, on the tiny GGUF: requests cross a real
process boundary, cancellation reaches the worker mid-prompt, and the worker's crashes (injected
with the test-only CODEAGENT_TEST_WORKER_FAULT) cost requests, never the server."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from codeagent_lsp.engine import faults
from codeagent_lsp.engine.backend import Generation
from codeagent_lsp.engine.engine import GenerationJob
from codeagent_lsp.engine.llama import EngineError
from codeagent_lsp.engine.supervisor import (
    MAX_CRASHES,
    Supervisor,
    WorkerConfig,
    describe_exit,
)
from codeagent_lsp.settings import EngineSettings
from tests.conftest import accept_registrations
from tests.lsp.test_server import inline, model_loaded, open_doc, stats
from tests.lsp.test_shutdown import children
from tests.unit.engine.test_engine import CODE

WAIT = 60.0  # seconds: a ceiling, never reached when the worker works

MakeSupervisor = Callable[..., Supervisor]


@pytest.fixture
def make_supervisor(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[MakeSupervisor]:
    """Supervisors on the tiny model; `fault=` sets CODEAGENT_TEST_WORKER_FAULT for the worker."""
    made: list[Supervisor] = []
    told: list[str] = []

    def make(fault: str = "", wait: bool = True, **overrides: object) -> Supervisor:
        if fault:
            monkeypatch.setenv(faults.ENV, fault)
        options: dict[str, object] = {"threads": 1, "slots": 2, "contextSize": 2048}
        options["parkDir"] = str(tmp_path / "kv")  # no other test's parked slots
        settings = EngineSettings(**{**options, **overrides})  # type: ignore[arg-type]
        supervisor = Supervisor(tiny_model, settings, told.append)
        supervisor.told = told  # type: ignore[attr-defined]
        made.append(supervisor)
        if wait:
            supervisor.wait_loaded(timeout=WAIT)
        return supervisor

    yield make
    for supervisor in made:
        supervisor.close()


def generate(supervisor: Supervisor, key: str, tokens: list[int], **job: object) -> Generation:
    return supervisor.submit(GenerationJob(key, tokens, **job)).result(timeout=WAIT)  # type: ignore[arg-type]


def worker_state(supervisor: Supervisor) -> dict[str, object]:
    worker = supervisor.stats()["worker"]
    assert isinstance(worker, dict)
    return worker


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


# --- the boundary -------------------------------------------------------------------------------


def test_requests_run_in_a_child_process_and_report_the_boundary_cost(
    make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor()
    prompt = supervisor.tokenize(CODE)
    first = generate(supervisor, "a.py", prompt, max_tokens=4)
    again = generate(supervisor, "a.py", prompt, max_tokens=4)
    assert first.record.outcome == again.record.outcome == "ok"
    assert first.text and first.text == again.text  # greedy: the same answer both times
    assert again.record.reused_tokens == len(prompt) - 1  # the worker kept the slot's KV cache
    assert first.record.boundary_ms > 0
    worker = worker_state(supervisor)
    assert worker["state"] == "ready" and worker["pid"] not in (None, os.getpid())
    assert worker["config"] == {"repack": True, "threads": 1, "gpuLayers": -1}
    assert [s["cachedTokens"] for s in supervisor.stats()["slots"]] == [len(prompt) + 3]


VOCABULARY_CLOSED_WHILE_IN_USE = """
import sys, threading, time
from pathlib import Path
from codeagent_lsp.engine.llama import EngineError, VocabularyOnly
vocab = VocabularyOnly(Path(sys.argv[1]))
started, counted = threading.Event(), []
def count():
    started.set()
    counted.append(len(vocab.tokenize("def area(w, h):\\n    return w * h\\n" * 200_000)))
thread = threading.Thread(target=count)
thread.start()
started.wait()
time.sleep(0.05)  # into the tokenization (seconds long), as a request is when settings change
vocab.close()
thread.join()
try:
    vocab.tokenize("x")
except EngineError as exc:
    print(counted, exc)
"""


def test_the_servers_vocabulary_closes_safely_while_a_request_tokenizes(
    tiny_model: Path,
) -> None:
    """In a child: freed under a tokenizing thread, llama.cpp aborts the whole process."""
    out = subprocess.run(
        [sys.executable, "-c", VOCABULARY_CLOSED_WHILE_IN_USE, str(tiny_model)],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    counted, _, error = out.stdout.partition("] ")
    assert int(counted.strip("[")) > 0 and error.strip() == "the engine was closed"


def test_cancel_reaches_the_worker_during_prompt_evaluation(
    make_supervisor: MakeSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = make_supervisor(contextSize=4096, batchSize=32, slots=1)
    prompt = (supervisor.tokenize(CODE) * 40)[:2500]
    seen: list[str] = []
    job = GenerationJob("a.py", prompt, max_tokens=4, should_stop=lambda t: bool(seen.append(t)))
    supervisor.submit(job)
    wait_for(lambda: supervisor._flags.running == job.id, "the worker starts the request")
    time.sleep(0.3)  # the worker is evaluating batches of 32; all 2500 take seconds
    supervisor.cancel(job)
    result = job.future.result(timeout=WAIT)
    assert result.record.outcome == "cancelled" and result.text == "" and not seen
    assert 0 < result.record.evaluated_tokens < len(prompt)
    follow_up = generate(supervisor, "a.py", prompt, max_tokens=2).record
    kept = result.record.reused_tokens + result.record.evaluated_tokens  # in the worker's cache
    assert follow_up.reused_tokens == kept
    # llama.cpp's "failed to compute graph" after an abort is expected: not an error in the log
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_newer_request_supersedes_and_should_stop_runs_in_the_server(
    make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor(contextSize=8192)
    prompt = supervisor.tokenize(CODE)
    first = GenerationJob("a.py", prompt, max_tokens=5000)
    supervisor.submit(first)
    wait_for(lambda: worker_state(supervisor)["state"] == "ready", "ready")
    time.sleep(0.2)
    second = GenerationJob("a.py", prompt, max_tokens=40, should_stop=lambda t: len(t) >= 12)
    supervisor.submit(second)
    assert first.future.result(timeout=WAIT).record.outcome == "superseded"
    stopped = second.future.result(timeout=WAIT)
    assert stopped.record.outcome == "ok" and len(stopped.text) >= 12
    assert stopped.record.generated_tokens < 40


def test_the_worker_gets_a_scrubbed_environment_its_memory_cap_and_no_network(
    make_supervisor: MakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEAGENT_REMOTE_TOKEN", "secret-token-value")
    supervisor = make_supervisor(memoryLimitMB=4096)
    pid = worker_state(supervisor)["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"secret-token-value" not in environ and b"PATH=" in environ
    limits = Path(f"/proc/{pid}/limits").read_text()
    data = next(line for line in limits.splitlines() if line.startswith("Max data size"))
    assert str(4096 * 1024 * 1024) in data
    # The running worker holds the socket filter (test_the_worker_refuses_every_socket shows
    # what it refuses).
    status = Path(f"/proc/{pid}/status").read_text()
    assert "\nSeccomp:\t2\n" in status and "\nNoNewPrivs:\t1\n" in status


def test_a_memory_cap_too_small_for_the_context_is_a_clear_error(
    make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor(memoryLimitMB=200, contextSize=1_000_000, wait=False)
    with pytest.raises(EngineError, match="memoryLimitMB caps it at 200 MiB"):
        supervisor.wait_loaded(timeout=WAIT)
    worker = worker_state(supervisor)
    assert (worker["state"], worker["starts"], worker["crashes"]) == ("stopped", 1, 0)


def test_a_memory_cap_below_the_workers_own_needs_is_named_in_the_message(
    make_supervisor: MakeSupervisor,
) -> None:
    """Under a cap this small the worker dies before llama.cpp loads anything (Python cannot
    start a thread, or raises MemoryError): the user still learns that the cap is the cause."""
    supervisor = make_supervisor(memoryLimitMB=64, wait=False)
    with pytest.raises(EngineError, match="memoryLimitMB caps it at 64 MiB"):
        supervisor.wait_loaded(timeout=WAIT)
    assert worker_state(supervisor)["state"] == "stopped"


def test_the_worker_refuses_every_socket() -> None:
    """Python code meets the audit hook; native code (ctypes' libc here, llama.cpp or a GPU
    runtime in the worker) meets the seccomp filter."""
    code = (
        "import ctypes, ctypes.util, socket, sys\n"
        "from codeagent_lsp.engine import worker\n"
        "assert worker._deny_network_sockets()\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
        "print('native', libc.socket(socket.AF_INET6, socket.SOCK_STREAM, 0), ctypes.get_errno())\n"
        "print('unix', libc.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0) >= 0)\n"
        "sys.addaudithook(worker._refuse_network)\n"
        "for attempt in (lambda: socket.socket(), lambda: socket.getaddrinfo('localhost', 80)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except PermissionError as exc:\n"
        "        print('refused', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "native -1 13" in out.stdout and "unix True" in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("refused") == 2, out.stdout + out.stderr


# --- supervision --------------------------------------------------------------------------------


def test_sigill_at_first_decode_steps_down_to_no_repacking(make_supervisor: MakeSupervisor) -> None:
    supervisor = make_supervisor(fault="SIGILL@decode#repack")
    prompt = supervisor.tokenize(CODE)
    with pytest.raises(EngineError, match="illegal instruction"):
        generate(supervisor, "a.py", prompt, max_tokens=4)
    assert len(supervisor.told) == 1  # type: ignore[attr-defined]
    assert "weight repacking off" in supervisor.told[0]  # type: ignore[attr-defined]
    served = generate(supervisor, "a.py", prompt, max_tokens=4)  # waits for the restart
    assert served.record.outcome == "ok"
    worker = worker_state(supervisor)
    assert worker["config"]["repack"] is False  # type: ignore[index]
    assert (worker["starts"], worker["crashes"]) == (2, 1)


def test_sigkill_during_generation_fails_that_request_and_restarts_as_it_was(
    make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor(fault="SIGKILL@generated=2#first")
    prompt = supervisor.tokenize(CODE)
    with pytest.raises(EngineError, match="killed"):
        generate(supervisor, "a.py", prompt, max_tokens=8)
    assert generate(supervisor, "a.py", prompt, max_tokens=8).record.outcome == "ok"
    worker = worker_state(supervisor)
    assert worker["config"]["repack"] is True  # type: ignore[index]
    assert worker["starts"] == 2


def test_a_worker_that_exits_mid_generation_is_restarted_as_it_was(
    make_supervisor: MakeSupervisor,
) -> None:
    """Not a signal: an exit status (an uncaught error, a native exit()), after two tokens."""
    supervisor = make_supervisor(fault="EXIT@generated=2#first")
    prompt = supervisor.tokenize(CODE)
    with pytest.raises(EngineError, match="exited with status 1"):
        generate(supervisor, "a.py", prompt, max_tokens=8)
    assert generate(supervisor, "a.py", prompt, max_tokens=8).record.outcome == "ok"
    worker = worker_state(supervisor)
    assert worker["config"]["repack"] is True and worker["starts"] == 2  # type: ignore[index]
    assert "exited with status 1" in supervisor.told[0]  # type: ignore[attr-defined]


def test_a_crash_loop_stops_with_a_message(make_supervisor: MakeSupervisor) -> None:
    supervisor = make_supervisor(fault="SIGSEGV@load", wait=False, threads=2)
    with pytest.raises(EngineError, match="every safer configuration"):
        supervisor.wait_loaded(timeout=WAIT)
    worker = worker_state(supervisor)
    assert worker["state"] == "stopped" and "Completions are off" in str(worker["problem"])
    assert worker["config"] == {"repack": False, "threads": 1, "gpuLayers": -1}
    assert worker["starts"] == 3  # as built, repacking off, one thread (no GPU to turn off)
    with pytest.raises(EngineError, match="segmentation fault"):
        generate(supervisor, "a.py", supervisor.tokenize(CODE), max_tokens=2)


def test_a_crash_that_repeats_is_told_once_and_the_crash_loop_once(
    make_supervisor: MakeSupervisor,
) -> None:
    """Every worker is killed while generating: each request fails with the cause, but the user
    hears it once, then once that the worker stopped, not once per restart."""
    supervisor = make_supervisor(fault="SIGKILL@generated=2")
    prompt = supervisor.tokenize(CODE)
    for _ in range(MAX_CRASHES):
        with pytest.raises(EngineError, match="killed"):
            generate(supervisor, "a.py", prompt, max_tokens=8)
    assert worker_state(supervisor)["state"] == "stopped"
    told = supervisor.told  # type: ignore[attr-defined]
    assert len(told) == 2 and "Restarting it" in told[0], told
    assert "killed" in told[1] and f"crashed {MAX_CRASHES} times" in told[1]


def test_a_model_that_fails_to_load_is_not_restarted(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(EngineError):
        Supervisor(broken, EngineSettings(threads=1)).wait_loaded(timeout=WAIT)


def test_safer_configurations_come_in_order() -> None:
    config = WorkerConfig(repack=True, threads=8, gpu_layers=-1)
    names = []
    while (step := config.safer(can_offload=True)) is not None:
        config, name = step
        names.append(name)
    assert names == ["weight repacking off", "one thread", "no GPU offload"]
    assert config == WorkerConfig(repack=False, threads=1, gpu_layers=0)


@pytest.mark.parametrize(
    ("returncode", "words"),
    [(-4, "illegal instruction"), (-9, "out-of-memory"), (-11, "segmentation"), (3, "status 3")],
)
def test_exits_are_told_in_words(returncode: int, words: str) -> None:
    assert words in describe_exit(returncode, ["ERROR boom"])


@pytest.mark.parametrize(
    ("returncode", "stderr", "named"),
    [
        (1, "MemoryError", True),
        (1, "RuntimeError: can't start new thread", True),
        (-6, "terminate called after throwing an instance of 'std::bad_alloc'", True),
        (-4, "ERROR boom", False),  # an illegal instruction is not the cap's doing
        (1, "ValueError: boom", False),
    ],
)
def test_a_death_from_a_failed_allocation_names_the_memory_cap(
    returncode: int, stderr: str, named: bool
) -> None:
    assert ("memoryLimitMB caps it at 300 MiB" in describe_exit(returncode, [stderr], 300)) is named
    assert "memoryLimitMB" not in describe_exit(returncode, [stderr], 0)


@pytest.mark.parametrize(
    "spec", ["SIGNOPE@load", "SIGILL@later", "SIGILL@generated", "SIGILL@load#x"]
)
def test_a_bad_fault_spec_is_refused(spec: str) -> None:
    with pytest.raises(faults.FaultSpecError):
        faults.Fault.parse(spec)


# --- over LSP: the server survives its worker -----------------------------------------------------

SHAPES = (
    'def area(width: float, height: float) -> float:\n    """Area of a rectangle."""\n'
    "    return width * height\n"
)
MAIN = "from shapes import area\n\n\ndef total(w, h):\n    return area(w, h) + \n"
CURSOR = types.Position(4, 25)
POLICY = '[defaults]\nrole = "member"\n[audit]\ndb = "{db}"\n'


@pytest.fixture
def fault_env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The worker fault (`@pytest.mark.parametrize('fault_env', [spec], indirect=True)`) and a
    policy with its own audit database; name it BEFORE `crashy` (pytest-lsp starts the server
    first)."""
    monkeypatch.setenv(faults.ENV, request.param)
    db = tmp_path / "audit.sqlite3"
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.replace("{db}", str(db)))
    monkeypatch.setenv("CODEAGENT_POLICY", str(policy))
    return db


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"]),
)
async def crashy(lsp_client: LanguageClient, tiny_model: Path, tmp_path: Path):
    await _start(lsp_client, tiny_model, tmp_path)
    yield
    await lsp_client.shutdown_session()


@pytest.fixture
def duplicate_token_model(tiny_model: Path, tmp_path: Path) -> Path:
    """The tiny model with two tokens spelled alike: its header and sizes check out, and
    llama.cpp's vocabulary loader aborts the process (GGML_ASSERT) that reads it."""
    data = tiny_model.read_bytes()
    assert data.count(b"<|fim_suffix|>") == 1
    path = tmp_path / "duplicate-token.gguf"
    path.write_bytes(data.replace(b"<|fim_suffix|>", b"<|fim_prefix|>"))
    return path


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"]),
)
async def hostile_vocabulary(
    lsp_client: LanguageClient, duplicate_token_model: Path, tmp_path: Path
):
    await _start(lsp_client, duplicate_token_model, tmp_path)
    yield
    await lsp_client.shutdown_session()


async def _start(lsp_client: LanguageClient, model: Path, tmp_path: Path) -> None:
    """A session on `model` over a project whose CodeGraph is ready, main.py open."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "shapes.py").write_text(SHAPES)
    (root / "main.py").write_text(MAIN)
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={
            "model": str(model),
            "engine": {"threads": 1},
            # No warm-up: the first decode is the test's own request.
            "completion": {"reuseSuggestion": False, "warm": False},
            "codegraph": {"cacheDir": str(tmp_path / "cache")},
        },
        workspace_folders=[types.WorkspaceFolder(root.as_uri(), "project")],
    )
    accept_registrations(lsp_client)
    await lsp_client.initialize_session(params)
    for _ in range(300):
        graph = (await stats(lsp_client)).get("codegraph")
        if graph and graph["ready"]:
            break
        await asyncio.sleep(0.1)
    lsp_client.main_uri = open_doc(lsp_client, root, "main.py", MAIN)  # type: ignore[attr-defined]


async def until_told(client: LanguageClient, words: str) -> str:
    for _ in range(600):
        told = [m.message for m in client.messages if words in m.message]
        if told:
            return told[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"never told of {words!r}: {[m.message for m in client.messages]}")


async def navigation_still_answers(client: LanguageClient) -> None:
    uri = client.main_uri  # type: ignore[attr-defined]
    where = types.TextDocumentPositionParams(
        types.TextDocumentIdentifier(uri), types.Position(4, 12)
    )
    definition = await client.text_document_definition_async(
        types.DefinitionParams(where.text_document, where.position)
    )
    assert definition and "shapes.py" in str(definition)
    hover = await client.text_document_hover_async(
        types.HoverParams(where.text_document, where.position)
    )
    assert hover and "def area(width: float, height: float)" in hover.contents.value  # type: ignore[union-attr]
    symbols = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(where.text_document)
    )
    assert [s.name for s in symbols or []] == ["total"]


@pytest.mark.parametrize("fault_env", ["SIGILL@decode#repack"], indirect=True)
async def test_sigill_at_first_decode_is_told_and_the_next_completion_is_served(
    fault_env: Path, crashy: LanguageClient
) -> None:
    client = crashy
    with pytest.raises(JsonRpcException):
        await inline(client, client.main_uri, CURSOR)  # type: ignore[attr-defined]
    told = await until_told(client, "illegal instruction")
    assert "cannot run" in told and "weight repacking off" in told
    await navigation_still_answers(client)
    assert (await inline(client, client.main_uri, CURSOR)).items  # type: ignore[attr-defined]
    worker = (await stats(client))["worker"]
    assert worker["config"]["repack"] is False and worker["state"] == "ready"
    assert len([m for m in client.messages if "illegal instruction" in m.message]) == 1


@pytest.mark.parametrize("fault_env", ["SIGKILL@generated=2#first"], indirect=True)
async def test_sigkill_during_generation_costs_one_request_and_the_audit_holds(
    fault_env: Path, crashy: LanguageClient
) -> None:
    client = crashy
    with pytest.raises(JsonRpcException) as failed:
        await inline(client, client.main_uri, CURSOR)  # type: ignore[attr-defined]
    # LSP's RequestFailed, naming the cause: not an internal error of the server's
    assert failed.value.code == types.LSPErrorCodes.RequestFailed
    assert "killed (SIGKILL)" in failed.value.message
    assert (await inline(client, client.main_uri, CURSOR)).items  # type: ignore[attr-defined]
    await navigation_still_answers(client)
    await client.shutdown_session()
    client.shutdown_session = _already_shut  # type: ignore[method-assign]
    verdict = subprocess.run(
        [sys.executable, "-m", "codeagent_lsp", "audit", "verify", "--db", str(fault_env)],
        capture_output=True,
        text=True,
    )
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    rows = sqlite3.connect(fault_env).execute("SELECT feature FROM audit").fetchall()
    assert [r for r in rows if r[0] == "completion"]  # the failed and the served request


@pytest.mark.parametrize("fault_env", ["SIGILL@load"], indirect=True)
async def test_a_crash_loop_is_told_and_other_features_keep_working(
    fault_env: Path, crashy: LanguageClient
) -> None:
    client = crashy
    told = await until_told(client, "Completions are off")
    assert "illegal instruction" in told
    assert not (await inline(client, client.main_uri, CURSOR)).items  # type: ignore[attr-defined]
    await navigation_still_answers(client)
    assert (await stats(client))["model"] is None
    assert len([m for m in client.messages if "Completions are off" in m.message]) == 1


async def test_a_vocabulary_that_aborts_llama_cpp_costs_a_worker_not_the_server(
    hostile_vocabulary: LanguageClient,
) -> None:
    client = hostile_vocabulary
    told = await until_told(client, "Completions are off")
    assert "llama.cpp aborted" in told
    assert not (await inline(client, client.main_uri, CURSOR)).items  # type: ignore[attr-defined]
    await navigation_still_answers(client)
    assert (await stats(client))["model"] is None


def test_a_tokenizer_vocabulary_that_aborts_llama_cpp_is_a_clear_error(
    duplicate_token_model: Path, tmp_path: Path
) -> None:
    """The remote backend counts tokens with a local GGUF: read first in a child process."""
    source = tmp_path / "app.py"
    source.write_text("def area(w, h):\n    return \n")
    out = subprocess.run(
        [sys.executable, "-m", "codeagent_lsp", "complete", f"{source}:2:11",
         "--set", "engine.backend=remote", "--set", 'remote.urls=["http://127.0.0.1:9"]',
         "--set", f"remote.tokenizer={duplicate_token_model}"],
        capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]  # model unavailable, as without a model
    assert f"llama.cpp could not read the vocabulary of {duplicate_token_model}" in out.stderr


async def _already_shut() -> None:
    return None


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"]),
)
async def loading(lsp_client: LanguageClient, tiny_model: Path, tmp_path: Path):
    """A server whose model is loading: `initialized` starts the load (about a second)."""
    params = types.InitializeParams(
        capabilities=types.ClientCapabilities(),  # settings are pushed, never pulled
        initialization_options={"model": str(tiny_model), "engine": {"threads": 1}},
        workspace_folders=[types.WorkspaceFolder(tmp_path.as_uri(), "project")],
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


async def test_engine_settings_changed_while_the_model_loads_leave_one_worker(
    loading: LanguageClient,
) -> None:
    """The load in progress is replaced: its worker is stopped once it has started, not left
    holding a model for the server's lifetime."""
    client = loading
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"codeagent": {"engine": {"threads": 2}}})
    )
    await model_loaded(client)
    worker = (await stats(client))["worker"]
    assert worker["config"]["threads"] == 2
    stat = Path(f"/proc/{worker['pid']}/stat").read_text()
    server = int(stat.rsplit(")", 1)[1].split()[1])  # the worker's parent
    for _ in range(600):
        if children(server) == {worker["pid"]}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"workers of the server: {children(server)}, in use: {worker['pid']}")
