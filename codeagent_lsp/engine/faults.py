"""Test-only fault injection: make the llama.cpp worker die of a chosen signal at a chosen point,
as it would on a CPU that lacks an instruction, an out-of-memory kill or a GPU driver fault.

Set `CODEAGENT_TEST_WORKER_FAULT` in the language server's environment to
`SIGNAL@POINT[#CONDITION]`:

- SIGNAL: a signal name (`SIGILL`, `SIGKILL`, `SIGSEGV`, `SIGABRT`, `SIGBUS`, ...), or `EXIT`:
  the worker exits with status 1 there, as after an uncaught error or a native `exit(1)`;
- POINT: `load` (before the model loads), `decode` (at the worker's first llama_decode), or
  `generated=N` (after the N-th generated token);
- CONDITION (optional): `repack` (only while weight repacking is on, like the AMX fault),
  `first` (only in the first worker a server starts).

Example: `SIGILL@decode#repack` is what an AMX VM does; `SIGKILL@generated=2#first` an OOM kill.
Never set it in production: it exists so tests can prove the supervisor's recovery.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENV = "CODEAGENT_TEST_WORKER_FAULT"
EXIT_STATUS = 1
"""The worker's exit status for the `EXIT` fault."""


class FaultSpecError(ValueError):
    """The environment variable does not parse."""


@dataclass(frozen=True)
class Fault:
    signal: signal.Signals | None
    """None: exit with EXIT_STATUS instead."""
    point: str
    """load, decode or generated."""
    tokens: int = 0
    condition: str = ""

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Raises FaultSpecError naming what is wrong."""
        head, _, condition = spec.partition("#")
        name, _, point = head.partition("@")
        point, _, count = point.partition("=")
        sig: signal.Signals | None = None
        if name.strip().upper() != "EXIT":
            try:
                sig = signal.Signals[name.strip().upper()]
            except KeyError:
                raise FaultSpecError(f"{ENV}: unknown signal {name!r}") from None
        if (
            point not in ("load", "decode", "generated")
            or (point == "generated") != count.isdigit()
        ):
            raise FaultSpecError(
                f"{ENV}: the point must be load, decode or generated=N, not {point!r}"
            )
        if condition not in ("", "repack", "first"):
            raise FaultSpecError(f"{ENV}: the condition must be repack or first, not {condition!r}")
        return cls(sig, point, int(count or 0), condition)

    def applies(self, *, start: int, repack: bool) -> bool:
        """Whether this worker (the `start`-th of its server, 1-based) should fault."""
        return {"": True, "repack": repack, "first": start == 1}[self.condition]

    def at_load(self) -> None:
        if self.point == "load":
            self._raise()

    def arm(self, runtime: Any) -> None:
        """Wrap the runtime's first decode or its token pieces (one call per generated token)."""
        if self.point == "decode":
            runtime.decode = self._before(runtime.decode, 1)
        elif self.point == "generated":
            runtime.piece = self._before(runtime.piece, self.tokens + 1)

    def _before(self, call: Callable[..., Any], nth: int) -> Callable[..., Any]:
        calls = 0

        def wrapped(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls >= nth:
                self._raise()
            return call(*args)

        return wrapped

    def _raise(self) -> None:
        if self.signal is None:
            os._exit(EXIT_STATUS)  # at once, from this thread, as a native exit() would
        # To this thread, as a real fault is: os.kill(getpid()) goes to the main thread, and
        # the faulting thread ran on (a decode, a token sent) until the process died.
        signal.pthread_kill(threading.get_ident(), self.signal)


def from_environment(*, start: int, repack: bool) -> Fault | None:
    """The fault this worker should suffer, if any. Raises FaultSpecError."""
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    fault = Fault.parse(spec)
    return fault if fault.applies(start=start, repack=repack) else None
