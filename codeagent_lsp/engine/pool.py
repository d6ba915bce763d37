"""One loaded model per node: the connections of a `--tcp`/`--ws` node borrow the embedded
backend for their (model file, engine settings) from a pool instead of loading their own.

A borrower's document keys carry its own prefix, so two clients editing files of the same
path get different slots and never supersede each other's requests, and each client's stats
show only its own requests and slots. The last borrower to leave closes the backend.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from codeagent_lsp.engine.backend import Generation, Request, RequestRecord
from codeagent_lsp.engine.embedded import EmbeddedBackend
from codeagent_lsp.engine.llama import EngineError, ModelInfo
from codeagent_lsp.engine.models import OpenModel
from codeagent_lsp.settings import EngineSettings

_Spec = tuple[str, EngineSettings]
"""(the model file's sha256, engine settings): clients share an engine for equal contents."""


@dataclass
class _Shared:
    number: int
    """Which load of the pool this is (1 = the first): equal numbers, same engine."""
    loading: concurrent.futures.Future[EmbeddedBackend] = field(
        default_factory=concurrent.futures.Future
    )
    users: int = 0
    listeners: dict[str, Callable[[str], None]] = field(default_factory=dict)
    """Each borrower's way to tell its user of a worker crash, by owner."""

    def tell(self, message: str) -> None:
        for notify in list(self.listeners.values()):
            notify(message)


class BackendPool:
    """Embedded backends by (model file, engine settings), counted by their borrowers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shared: dict[_Spec, _Shared] = {}
        self._owners = itertools.count(1)
        self.loads = 0
        """Models this process loaded through the pool."""

    def borrow(
        self,
        model: OpenModel,
        settings: EngineSettings,
        notify: Callable[[str], None] | None = None,
    ) -> SharedBackend:
        """The backend for `model` (opened and checked: `models.open_model`) with `settings`,
        loaded by the first borrower from its open file (blocking; the others wait for it).
        `notify` hears of worker crashes while borrowed. Raises what loading raised."""
        spec = (model.sha256, settings)
        with self._lock:
            shared = self._shared.get(spec)
            first = shared is None
            if shared is None:
                self.loads += 1
                shared = self._shared[spec] = _Shared(self.loads)
            shared.users += 1
            owner = f"c{next(self._owners)}:"
            if notify is not None:
                shared.listeners[owner] = notify
        if first:
            try:
                shared.loading.set_result(EmbeddedBackend(model, settings, shared.tell))
            except BaseException as exc:  # every waiter gets the error; a later borrow retries
                shared.loading.set_exception(exc)
        try:
            backend = shared.loading.result()
        except BaseException:
            self.give_back(spec, shared)
            raise
        return SharedBackend(self, spec, shared, backend, owner)

    def give_back(self, spec: _Spec, shared: _Shared) -> None:
        with self._lock:
            shared.users -= 1
            last = shared.users == 0
            if last:
                del self._shared[spec]
        if last and shared.loading.exception() is None:
            shared.loading.result().close()


class SharedBackend:
    """One connection's view of a pooled EmbeddedBackend (the Backend protocol)."""

    warms = True

    def __init__(
        self,
        pool: BackendPool,
        spec: _Spec,
        shared: _Shared,
        backend: EmbeddedBackend,
        owner: str,
    ) -> None:
        self._pool, self._spec, self._shared = pool, spec, shared
        self._backend, self._owner = backend, owner
        self._closed = False

    @property
    def info(self) -> ModelInfo:
        return self._backend.info

    def count_tokens(self, text: str) -> int:
        return self._open().count_tokens(text)

    def has_token(self, text: str) -> bool:
        return self._backend.has_token(text)

    async def generate(self, request: Request) -> Generation:
        return await self._open().generate(
            dataclasses.replace(request, key=self._owner + request.key)
        )

    def release(self, key: str) -> None:
        self._backend.release(self._owner + key)

    def add_record(self, record: RequestRecord) -> None:
        self._backend.add_record(record, self._owner)

    def stats(self) -> dict[str, object]:
        data = self._backend.stats(self._owner)
        data["shared"] = {
            "engine": self._shared.number,
            "clients": self._shared.users,
            "loads": self._pool.loads,
        }
        return data

    def _open(self) -> EmbeddedBackend:
        """The backend, unless given back: the last borrower's close frees the model, and
        llama.cpp would then read freed memory."""
        if self._closed:
            raise EngineError("this client's model was closed")
        return self._backend

    def close(self) -> None:
        """Cancel this connection's requests, free its slots and give the backend back."""
        if self._closed:
            return
        self._closed = True
        self._shared.listeners.pop(self._owner, None)
        self._backend.engine.release_owner(self._owner)
        self._pool.give_back(self._spec, self._shared)
