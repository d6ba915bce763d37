"""Syntax trees of open documents, re-parsed incrementally as they change.

Between two versions the changed region is found by comparing the bytes (common prefix and
suffix): one `Tree.edit` covering every change of a debounced burst of keystrokes, after which
tree-sitter re-parses only around it and reuses the rest of the old tree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import tree_sitter

from codeagent_lsp.codegraph.extract import parse


@dataclass
class _Live:
    language: str
    source: bytes
    tree: tree_sitter.Tree


class LiveTrees:
    def __init__(self) -> None:
        self._documents: dict[str, _Live] = {}
        self._lock = threading.Lock()

    def update(self, key: str, source: bytes, language: str) -> tuple[tree_sitter.Tree, bool]:
        """The tree of `source`, and whether it was parsed incrementally from the last one."""
        with self._lock:
            live = self._documents.get(key)
        old_tree = None
        if live is not None and live.language == language:
            old_tree = live.tree
            old_tree.edit(**_edit(live.source, source))
        tree = parse(source, language, old_tree)
        with self._lock:
            self._documents[key] = _Live(language, source, tree)
        return tree, old_tree is not None

    def forget(self, key: str) -> None:
        with self._lock:
            self._documents.pop(key, None)


def _edit(old: bytes, new: bytes) -> dict[str, Any]:
    """The single edit turning `old` into `new`, in tree-sitter's terms (bytes and points)."""
    limit = min(len(old), len(new))
    start = 0
    while start < limit and old[start] == new[start]:
        start += 1
    common_tail = 0
    while (
        common_tail < limit - start
        and old[len(old) - 1 - common_tail] == new[len(new) - 1 - common_tail]
    ):
        common_tail += 1
    old_end, new_end = len(old) - common_tail, len(new) - common_tail
    return {
        "start_byte": start,
        "old_end_byte": old_end,
        "new_end_byte": new_end,
        "start_point": _point(old, start),
        "old_end_point": _point(old, old_end),
        "new_end_point": _point(new, new_end),
    }


def _point(source: bytes, offset: int) -> tuple[int, int]:
    row = source.count(b"\n", 0, offset)
    return row, offset - (source.rfind(b"\n", 0, offset) + 1)
