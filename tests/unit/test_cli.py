"""The command line: headless completion, model commands, the latency benchmark and --tcp."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CLI = [sys.executable, "-m", "codeagent_lsp"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=check
    )


def test_complete_prints_the_suggestion_and_its_timings(tiny_model: Path):
    out = run(
        "complete",
        "examples/sample.py:25:44",
        "--model",
        str(tiny_model),
        "--threads",
        "1",
        "--json",
    )
    result = json.loads(out.stdout)
    assert result["suggestion"]
    record = result["record"]
    assert record["promptTokens"] == record["evaluatedTokens"] > 50
    assert record["totalMs"] >= record["ttftMs"] > 0
    assert result["model"]["device"].startswith(("cpu", "gpu"))


def test_complete_explains_a_bad_location(tiny_model: Path):
    out = run("complete", "examples/sample.py:999:1", "--model", str(tiny_model), check=False)
    assert out.returncode == 2
    assert "past the end" in out.stderr
    out = run("complete", "examples/sample.py", "--model", str(tiny_model), check=False)
    assert out.returncode == 2 and "FILE:LINE:COL" in out.stderr


def test_complete_without_a_model_names_the_fix(tmp_path: Path):
    out = run("complete", "examples/sample.py:25:44", "--models-dir", str(tmp_path), check=False)
    assert out.returncode == 2
    assert "codeagent-lsp model pull qwen2.5-coder-0.5b" in out.stderr


def test_model_list_shows_the_registry(tmp_path: Path):
    out = run("model", "list", "--models-dir", str(tmp_path))
    assert "qwen2.5-coder-0.5b" in out.stdout


def test_latency_bench_reports_against_its_baseline(tiny_model: Path):
    out = run(
        "bench",
        "latency",
        "--model",
        str(tiny_model),
        "--threads",
        "1",
        "--json",
        "--keystrokes",
        "12",
        "--baseline-requests",
        "3",
    )
    result = json.loads(out.stdout)
    for key in (
        "p50_ms",
        "p95_ms",
        "baseline_p50_ms",
        "ratio_p50",
        "evaluated_tokens_p50",
        "prompt_tokens_p50",
        "device",
    ):
        assert key in result
    assert result["requests"] == 12 and result["baseline_requests"] == 3
    assert result["evaluated_tokens_p50"] < result["baseline_evaluated_tokens_p50"]
    assert result["baseline_evaluated_tokens_p50"] > 0.9 * result["prompt_tokens_p50"]


def test_cold_open_bench_parks_restores_and_prefetches(tiny_model: Path):
    out = run(
        *("bench", "latency", "--scenario", "cold-open", "--think-ms", "100"),
        *("--model", str(tiny_model), "--threads", "1", "--json"),
    )
    result = json.loads(out.stdout)
    for key in ("cold_first_p50_ms", "warm_first_p50_ms", "parked_first_p50_ms", "ratio_first"):
        assert isinstance(result[key], float)
    runs = result["conditions"]
    assert all(len(run["first_ms"]) == 13 for run in runs.values())
    # The warm-up at the cursor computes the first suggestion exactly where warm-ups are on.
    first = {name: set(run["first_outcomes"]) for name, run in runs.items()}
    assert first["warm"] == first["all"] == {"prefetched"}
    assert first["none"] == first["park"] == first["prefetch"] == {"ok"}
    # The suggestion after an accept comes from the prefetch exactly where prefetch is on.
    accepted = {name: set(run["next_outcomes"]) for name, run in runs.items()}
    assert accepted["prefetch"] == accepted["all"] == {"prefetched"}
    assert accepted["none"] == accepted["warm"] == accepted["park"] == {"ok"}
    # After the restart the first three files come back from disk only where parking is on.
    restored = {name: run["restored_after_restart"] for name, run in runs.items()}
    assert all(n > 0 for n in restored["park"] + restored["all"])
    assert restored["none"] == restored["warm"] == [0] * 3


async def test_tcp_transport_answers_initialize(tiny_model: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(*CLI, "--tcp", f"127.0.0.1:{port}")
    try:
        reader, writer = await _connect(port)
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"capabilities": {}, "processId": None},
            }
        ).encode()
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        headers = await reader.readuntil(b"\r\n\r\n")
        length = int(headers.split(b":")[1].split(b"\r\n")[0])
        reply = json.loads(await reader.readexactly(length))
        assert reply["id"] == 1
        assert reply["result"]["serverInfo"]["name"] == "codeagent-lsp"
        writer.close()
    finally:
        server.terminate()
        await server.wait()


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for _ in range(100):
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
    pytest.fail("the server did not listen")


def test_index_command_prints_a_summary(tmp_path: Path):
    project = REPO / "tests" / "fixtures" / "projects" / "python"
    out = run("index", str(project), "--db", str(tmp_path / "graph.db"))
    files, symbols = out.stdout.split()[0:3:2]
    assert int(files) == 3 and int(symbols) > 10  # app.py, shapes/__init__.py, geometry.py
    assert "references" in out.stdout and (tmp_path / "graph.db").exists()


def test_related_bench_reports_against_its_baseline(tmp_path: Path):
    project = tmp_path / "projects"
    shutil.copytree(REPO / "tests" / "fixtures" / "projects", project)
    out = subprocess.run(
        [*CLI, "bench", "related", "--repo", str(project), "--samples", "5", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    result = json.loads(out.stdout)
    assert result["samples"] == 5 and result["files"] > 20
    for key in ("p50_ms", "p95_ms", "baseline_p50_ms", "ratio_p50", "snippets_p50"):
        assert key in result


def test_tests_command_names_a_missing_function(tiny_model: Path):
    out = run(
        "tests", "examples/sample.py:no_such_function", "--model", str(tiny_model), check=False
    )
    assert out.returncode == 2 and "no definition named 'no_such_function'" in out.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["bench", "related", "--repo", "no-such-folder"], "not a folder: 'no-such-folder'"),
        (["bench", "quality", "--repo", "README.md", "--samples", "1"], "not a folder"),
        (["bench", "next-edits", "--repo", "no-such-folder"], "not a folder"),
        (["complete", "examples/sample.py:1:1", "--set", "engine.threads.x=1"], "not a section"),
        (["bench", "latency", "--keystrokes", "1"], "codeagent-lsp model pull"),
        (
            ["complete", "examples/sample.py:1:1", "--set", "completion=5"],
            "codeagent-lsp model pull",
        ),
    ],
)
def test_wrong_arguments_get_one_line_and_no_traceback(
    tmp_path: Path, args: list[str], says: str
) -> None:
    """Wrong arguments, a missing model (the models folder is empty): one line that says
    what is wrong, a nonzero exit status, no traceback."""
    out = run(*args, "--models-dir", str(tmp_path), check=False)
    assert out.returncode != 0
    assert says in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(("codeagent-lsp", "usage:"))


def test_an_unexpected_failure_is_one_line_and_its_traceback_goes_to_the_log(
    tmp_path: Path,
) -> None:
    """A failure no check foresaw (an audit database that is not SQLite): the error's type
    and message on one line; the traceback only in the log, at --log-level debug."""
    db = tmp_path / "audit.sqlite3"
    db.write_bytes(b"not a database" * 100)
    for command in (["audit", "verify"], ["audit", "export", "--since", "2026-01-01"]):
        out = run(*command, "--db", str(db), check=False)
        assert out.returncode == 1
        assert out.stderr.splitlines() == [
            "codeagent-lsp: DatabaseError: file is not a database (--log-level debug shows where)"
        ]
    out = run("--log-level", "debug", "audit", "verify", "--db", str(db), check=False)
    assert "Traceback" in out.stderr and "DatabaseError" in out.stderr
