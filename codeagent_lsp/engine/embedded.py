"""The embedded backend: requests become token jobs for the llama.cpp worker process on this
machine (`supervisor.Supervisor`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from codeagent_lsp.engine.backend import Generation, Request, RequestRecord, Special
from codeagent_lsp.engine.engine import GenerationJob
from codeagent_lsp.engine.llama import EngineError, ModelInfo
from codeagent_lsp.engine.models import OpenModel
from codeagent_lsp.engine.supervisor import Supervisor
from codeagent_lsp.settings import EngineSettings


class EmbeddedBackend:
    """Control tokens go in by id (looked up once), so code can never inject one."""

    warms = True

    def __init__(
        self,
        model: Path | OpenModel,
        settings: EngineSettings,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        """Starts the worker and waits for it to load the model (blocking). `notify` is told,
        from any thread, when the worker crashes or stops. Raises EngineError."""
        self.engine = Supervisor(model, settings, notify)
        try:
            self.info: ModelInfo = self.engine.wait_loaded()
        except Exception:
            self.engine.close()
            raise
        self._ids: dict[str, int | None] = {}

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def has_token(self, text: str) -> bool:
        return self._id(text) is not None

    async def generate(self, request: Request) -> Generation:
        """Send the request to the worker; cancelling the awaiting task cancels it."""
        tokens, tail_start = self._tokens(request)
        stops = (self._id(t) for t in request.stop)
        job = GenerationJob(
            key=request.key,
            tokens=tokens,
            tail_start=tail_start,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stop_tokens=frozenset(i for i in stops if i is not None),
            should_stop=request.should_stop,
            background=request.background,
        )
        future = self.engine.submit(job)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.engine.cancel(job)
            raise

    def _tokens(self, request: Request) -> tuple[list[int], int | None]:
        """Prompt tokens, and where the cacheable tail (from the tail marker) starts."""
        tokens: list[int] = []
        tail_start = None
        for segment in request.segments:
            if isinstance(segment, Special):
                if segment.text == request.tail_marker:
                    tail_start = len(tokens)
                tokens.append(self._control_id(segment.text))
            else:
                tokens.extend(self.engine.tokenize(segment))
        return tokens, tail_start

    def _id(self, text: str) -> int | None:
        if text not in self._ids:
            self._ids[text] = self.engine.token_id(text)
        return self._ids[text]

    def _control_id(self, text: str) -> int:
        token = self._id(text)
        if token is None:
            raise EngineError(f"the model's vocabulary lacks the control token {text!r}")
        return token

    def release(self, key: str) -> None:
        self.engine.release(key)

    def add_record(self, record: RequestRecord, owner: str = "") -> None:
        self.engine.add_record(record, owner)

    def stats(self, owner: str = "") -> dict[str, object]:
        return self.engine.stats(owner)

    def close(self) -> None:
        self.engine.close()
