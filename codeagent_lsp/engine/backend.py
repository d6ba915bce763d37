"""What the Assistant asks of a model, wherever it runs: in this process (`EmbeddedBackend`,
llama.cpp slots) or on inference replicas elsewhere in the network (`RemoteBackend`).

A request carries the prompt as template segments (control tokens by name) and, for fill-in-
the-middle, the parts it was built from: llama-server's /infill wants those rather than a
prompt, and a chat service wants the messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from codeagent_lsp.engine.llama import ModelInfo


@dataclass(frozen=True)
class Special:
    """A control token of the model, named by its text in the vocabulary."""

    text: str


Segment = Special | str


@dataclass
class RequestRecord:
    document: str
    slot: int
    prompt_tokens: int
    reused_tokens: int
    shifted_tokens: int
    evaluated_tokens: int
    generated_tokens: int
    ttft_ms: float
    total_ms: float
    outcome: str
    """ok, cancelled, superseded, preempted (a warm-up or prefetch a real request overtook),
    error, typeahead (answered from the last suggestion) or prefetched (answered from the
    suggestion computed in the background after an accept)."""
    replica: str = ""
    """The inference replica that answered (remote backend); empty when embedded."""
    restored_tokens: int = 0
    """Tokens whose KV cache came back from a parked slot on disk (counted in reused too)."""
    boundary_ms: float = 0.0
    """Milliseconds spent crossing to the model worker process and back (serialising, pipes,
    scheduling): the round trip less the worker's own time; 0 when no worker is involved."""

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        return {_camel(k): v for k, v in data.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


@dataclass
class Generation:
    text: str
    record: RequestRecord

    @property
    def cancelled(self) -> bool:
        return self.record.outcome in ("cancelled", "superseded")


@dataclass(frozen=True)
class FimParts:
    """The pieces a FIM prompt was built from (for services that build the prompt themselves)."""

    prefix: str
    suffix: str
    context_files: tuple[tuple[str, str], ...] = ()
    """(path, text) pairs of repository context."""


@dataclass(frozen=True)
class Request:
    key: str
    """The document (its URI): one cache slot, and one replica, per key."""
    segments: list[Segment]
    max_tokens: int
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    """Control tokens (by text) that end the answer besides the model's end-of-generation."""
    tail_marker: str | None = None
    """The control token where the prompt's stable tail (the FIM suffix) starts."""
    should_stop: Callable[[str], bool] | None = None
    """Called with the text so far; True ends generation early."""
    stop_mode: str = ""
    """Which rule `should_stop` applies ("single-line", "multi-line"): part of what decides
    the answer, so a stored answer is reused only under the same rule."""
    fim: FimParts | None = None
    messages: tuple[tuple[str, str], ...] = ()
    """(role, content) pairs of an instruct request, for chat services."""
    background: bool = False
    """A warm-up (max_tokens 0) or a prefetch: any real request preempts it."""


class Backend(Protocol):
    """The interface the Assistant uses; both backends implement it."""

    @property
    def info(self) -> ModelInfo:
        """The model served (read-only: a pooled backend shares its owner's)."""
        ...

    warms: bool
    """Whether `generate` of a background request (a warm-up) is worth sending."""

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in a prompt; never fewer than the model will see."""
        ...

    def has_token(self, text: str) -> bool:
        """Whether the model's vocabulary holds the control token `text`."""
        ...

    async def generate(self, request: Request) -> Generation:
        """The answer; a newer request for the same key supersedes this one (outcome
        "superseded"), cancelling the awaiting task cancels the request."""
        ...

    def release(self, key: str) -> None:
        """A document was closed: free what is kept for it."""
        ...

    def add_record(self, record: RequestRecord) -> None:
        """Record a request answered without the model (a reused suggestion)."""
        ...

    def stats(self) -> dict[str, object]:
        """Recent request records and the backend's own state, for `codeagent/stats`."""
        ...

    def close(self) -> None: ...
