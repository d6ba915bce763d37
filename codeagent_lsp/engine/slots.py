"""Slots: one llama.cpp sequence per open document, least recently used evicted first."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class Slot:
    seq: int
    key: str
    tokens: list[int] = field(default_factory=list)
    """Exactly the tokens held in the KV cache for `seq`, at positions 0..len-1."""
    tail_start: int | None = None
    """Where the cached prompt's stable tail (the FIM suffix) begins."""
    tail_drift: int = 0
    """Prefix tokens evaluated since the cached tail (the FIM suffix) was last computed."""
    last_used: float = field(default_factory=time.monotonic)
    requests: int = 0


class SlotTable:
    """Maps documents to sequence ids 0..n-1; eviction hands the caller the sequence to clear."""

    def __init__(self, n_slots: int) -> None:
        self.n_slots = n_slots
        self._slots: OrderedDict[str, Slot] = OrderedDict()

    def acquire(self, key: str) -> tuple[Slot, Slot | None]:
        """The slot of `key` (marked most recently used) and the slot evicted for it, if any."""
        slot = self._slots.get(key)
        evicted = None
        if slot is None:
            used = {s.seq for s in self._slots.values()}
            free = [seq for seq in range(self.n_slots) if seq not in used]
            if not free:
                _, evicted = self._slots.popitem(last=False)
                free = [evicted.seq]
            slot = Slot(seq=free[0], key=key)
            self._slots[key] = slot
        self._slots.move_to_end(key)
        slot.last_used = time.monotonic()
        slot.requests += 1
        return slot, evicted

    def all(self) -> list[Slot]:
        return list(self._slots.values())

    def least_recent_other(self, key: str) -> Slot | None:
        """The least recently used slot holding tokens, other than `key`'s."""
        return next((s for k, s in self._slots.items() if k != key and s.tokens), None)

    def release(self, key: str) -> Slot | None:
        return self._slots.pop(key, None)

    def keys(self, owner: str = "") -> list[str]:
        """Keys holding a slot that start with `owner`."""
        return [key for key in self._slots if key.startswith(owner)]

    def table(self, owner: str = "") -> list[dict[str, object]]:
        """The slots of the keys that start with `owner`, most recently used first."""
        return [row for key, row in self.rows() if key.startswith(owner)]

    def rows(self) -> list[tuple[str, dict[str, object]]]:
        """(key, the slot as `codeagent/stats` shows it), most recently used first."""
        now = time.monotonic()
        return [
            (
                s.key,
                {
                    "seq": s.seq,
                    "document": short_name(s.key),
                    "cachedTokens": len(s.tokens),
                    "requests": s.requests,
                    "idleMs": round((now - s.last_used) * 1000),
                },
            )
            for s in reversed(self._slots.values())
        ]


def short_name(key: str) -> str:
    """Documents appear in stats by file name and a short hash, never by their text."""
    name = key.rsplit("/", 1)[-1]
    return f"{name}#{hashlib.sha256(key.encode()).hexdigest()[:8]}"
