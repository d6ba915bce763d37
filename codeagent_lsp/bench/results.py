"""The quality benchmark's results file: one JSON line per completion, appended and synced.

A result is keyed by (task id, condition, sha256 of the exact prompt, model sha256): a rerun
finds what is stored and unchanged and runs only what is missing or changed, so a long run can
be built up over several sittings. Append-only JSON lines with an fsync after each line: an
interrupted run loses at most the completion it was doing, and a torn last line is skipped on
reading. Later lines win over earlier ones with the same key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs

from codeagent_lsp.engine.backend import Request, Segment, Special
from codeagent_lsp.engine.models import APP_NAME


def default_path() -> Path:
    """`<user cache dir>/codeagent-lsp/bench/quality.jsonl`."""
    return platformdirs.user_cache_path(APP_NAME, appauthor=False) / "bench" / "quality.jsonl"


def prompt_sha256(request: Request) -> str:
    """Hex sha256 of what decides the model's answer: the prompt's segments (control tokens
    told apart from text), the token limit, the temperature, the stop tokens and the stop
    mode (where generation ends: after one line, or where post-processing's multi-line rules
    end the suggestion)."""
    shape = {
        "segments": [_segment(s) for s in request.segments],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "stop": list(request.stop),
        "stop_mode": request.stop_mode,
    }
    return hashlib.sha256(json.dumps(shape).encode("ascii")).hexdigest()


def _segment(segment: Segment) -> list[str]:
    return ["special", segment.text] if isinstance(segment, Special) else ["text", segment]


@dataclass(frozen=True)
class Result:
    """One completion: `raw` is the model's answer before post-processing (re-applied when
    scoring, so a post-processing change needs no model call); `latency_ms` is wall time;
    `generated_tokens` tells post-processing whether the token limit cut the answer."""

    task: str
    condition: str
    prompt_sha256: str
    model_sha256: str
    raw: str
    latency_ms: float
    prompt_tokens: int
    context_files: int
    generated_tokens: int = 0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.task, self.condition, self.prompt_sha256, self.model_sha256)


class ResultsFile:
    """Results read from `path` at opening, and appended to it as they come."""

    def __init__(self, path: Path) -> None:
        """Raises OSError when the file cannot be read or its folder created."""
        self.path = path
        self._by_key: dict[tuple[str, str, str, str], Result] = {}
        self._by_prompt: dict[tuple[str, str], Result] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        for line in text.splitlines():
            result = _parse(line)
            if result is not None:
                self._remember(result)
        # A run killed mid-line left a torn line: the next one starts on a line of its own.
        self._pending = "\n" if text and not text.endswith("\n") else ""

    def __len__(self) -> int:
        return len(self._by_key)

    def find(self, task: str, condition: str, prompt: str, model: str) -> Result | None:
        """The stored result for exactly this key."""
        return self._by_key.get((task, condition, prompt, model))

    def same_prompt(self, prompt: str, model: str) -> Result | None:
        """Any stored result of the same prompt on the same model (another condition whose
        context came out the same gets the same answer)."""
        return self._by_prompt.get((prompt, model))

    def add(self, result: Result) -> None:
        """Append `result` and sync it to disk before returning."""
        line = self._pending + json.dumps(asdict(result)) + "\n"  # ASCII: lone surrogates survive
        # 0o600: the file holds code of the benchmarked repository.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self._pending = ""
        self._remember(result)

    def _remember(self, result: Result) -> None:
        self._by_key[result.key] = result
        self._by_prompt[(result.prompt_sha256, result.model_sha256)] = result


def _parse(line: str) -> Result | None:
    """A stored line, or None for a torn or foreign one (or one written before the generated
    tokens were kept: post-processing needs them, so that prompt is asked again)."""
    try:
        data = json.loads(line)
        return Result(
            task=str(data["task"]),
            condition=str(data["condition"]),
            prompt_sha256=str(data["prompt_sha256"]),
            model_sha256=str(data["model_sha256"]),
            raw=str(data["raw"]),
            latency_ms=float(data["latency_ms"]),
            prompt_tokens=int(data["prompt_tokens"]),
            context_files=int(data["context_files"]),
            generated_tokens=int(data["generated_tokens"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
