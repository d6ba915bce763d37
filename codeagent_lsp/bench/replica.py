"""A local inference replica: llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`, from its `server` extra) on loopback, for the remote backend's
benchmark and tests. Real deployments run llama-server or vLLM (docs/deploy.md)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

START_TIMEOUT = 120.0
"""Seconds the server may take to start on a busy 2-core machine."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReplicaError(Exception):
    """The local replica could not start; the message holds the end of its log."""


@dataclass
class LocalReplica:
    """A llama_cpp.server process serving `model` on a loopback port; `start` again after
    `kill` to bring it back on the same port."""

    model: Path
    log: Path
    threads: int = 1
    api_key: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalReplica:
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
            "--host", "127.0.0.1", "--port", str(self.port), "--model_alias", self.model.stem,
            "--n_ctx", "4096", "--n_threads", str(self.threads),
            "--n_threads_batch", str(self.threads),
        ]  # fmt: skip
        if self.api_key:
            command += ["--api_key", self.api_key]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ReplicaError(f"llama_cpp.server exited: {self._log_tail()}")
            try:  # loopback only; no proxy from the environment
                answer = httpx.get(self.url + "/v1/models", headers=headers, trust_env=False)
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise ReplicaError(f"llama_cpp.server did not start: {self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
