"""Inference replicas: which one serves a document, and which are failing.

A document always goes to the same replica while it is healthy (consistent hashing over its
key), so that replica's prompt cache stays warm; adding or removing a replica moves only the
documents it gains or loses. A failing replica is skipped, then tried again after a wait that
doubles with each further failure.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from codeagent_lsp.engine.slots import SlotTable

VIRTUAL_NODES = 64
"""Points per replica on the ring: enough for an even share with a handful of replicas."""


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Consistent hashing with virtual nodes. Hand-written: it is fifteen lines, and the
    packages offering it are larger and little maintained."""

    def __init__(self, names: list[str], virtual_nodes: int = VIRTUAL_NODES) -> None:
        points = sorted(
            (_point(f"{name}#{i}"), name) for name in names for i in range(virtual_nodes)
        )
        self._hashes = [h for h, _ in points]
        self._names = [n for _, n in points]
        self._count = len(set(names))

    def order(self, key: str) -> list[str]:
        """Every replica, in the order `key` prefers them: its owner first, then clockwise."""
        start = bisect.bisect(self._hashes, _point(key))
        order: list[str] = []
        for i in range(len(self._names)):
            name = self._names[(start + i) % len(self._names)]
            if name not in order:
                order.append(name)
                if len(order) == self._count:
                    break
        return order


@dataclass
class Replica:
    url: str
    slots: SlotTable
    """Server slots of this replica, one per document (llama-server's id_slot)."""
    failures: int = 0
    """Consecutive failures; 0 = up."""
    retry_at: float = 0.0
    last_error: str = ""
    requests: int = 0

    def state(self, now: float) -> str:
        if not self.failures:
            return "up"
        return "retrying" if now >= self.retry_at else "down"


@dataclass
class ReplicaPool:
    urls: list[str]
    slots: int = 4
    retry_seconds: float = 2.0
    max_retry_seconds: float = 60.0
    notify: Callable[[str], None] | None = None
    """Told, in words for the user, when a replica goes down or comes back."""
    clock: Callable[[], float] = time.monotonic
    replicas: dict[str, Replica] = field(init=False)
    ring: HashRing = field(init=False)

    def __post_init__(self) -> None:
        self.replicas = {url: Replica(url, SlotTable(self.slots)) for url in self.urls}
        self.ring = HashRing(list(self.replicas))

    def candidates(self, key: str) -> list[Replica]:
        """Replicas to try for `key`, preferred first; those waiting out a failure are left out."""
        now = self.clock()
        ordered = (self.replicas[url] for url in self.ring.order(key))
        return [r for r in ordered if r.state(now) != "down"]

    def failed(self, replica: Replica, reason: str) -> None:
        replica.failures += 1
        delay = min(self.retry_seconds * 2 ** (replica.failures - 1), self.max_retry_seconds)
        replica.retry_at = self.clock() + delay
        replica.last_error = reason
        if replica.failures == 1:
            self._tell(
                f"inference replica {replica.url} failed ({reason}); its documents go "
                f"to the other replicas, it is tried again in {delay:g} s"
            )

    def succeeded(self, replica: Replica) -> None:
        replica.requests += 1
        if replica.failures:
            replica.failures, replica.last_error = 0, ""
            self._tell(f"inference replica {replica.url} is serving again")

    def unavailable(self) -> str:
        """Why no replica can take a request now, for the user."""
        now = self.clock()
        states = [
            f"{r.url}: {r.last_error}, next try in {max(0.0, r.retry_at - now):.1f} s"
            for r in self.replicas.values()
        ]
        return "every inference replica is failing (" + "; ".join(states) + ")"

    def table(self) -> list[dict[str, object]]:
        now = self.clock()
        return [
            {
                "url": r.url,
                "state": r.state(now),
                "failures": r.failures,
                "retryInSeconds": round(max(0.0, r.retry_at - now), 1) if r.failures else 0,
                "lastError": r.last_error,
                "requests": r.requests,
                "documents": len(r.slots.table()),
            }
            for r in self.replicas.values()
        ]

    def _tell(self, message: str) -> None:
        if self.notify is not None:
            self.notify(message)
