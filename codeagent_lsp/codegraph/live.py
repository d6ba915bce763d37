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

from codeagent_lsp import lines
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
        source = lines.parser_source(source)  # the edit's points count rows as the parser does
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

    def tree(self, key: str, source: bytes) -> tree_sitter.Tree | None:
        """A copy of the document's tree when it is the tree of `source` (else None): readers
        in other threads get their own, as `update` edits the kept one in place."""
        with self._lock:
            live = self._documents.get(key)
        if live is None or live.source != source:
            return None
        return live.tree.copy()

    def forget(self, key: str) -> None:
        with self._lock:
            self._documents.pop(key, None)


def _edit(old: bytes, new: bytes) -> dict[str, Any]:
    """The single edit turning `old` into `new`, in tree-sitter's terms (bytes and points)."""
    limit = min(len(old), len(new))
    start = _common_prefix(old, new, limit)
    common_tail = _common_prefix(old[start:][::-1], new[start:][::-1], limit - start)
    old_end, new_end = len(old) - common_tail, len(new) - common_tail
    return {
        "start_byte": start,
        "old_end_byte": old_end,
        "new_end_byte": new_end,
        "start_point": _point(old, start),
        "old_end_point": _point(old, old_end),
        "new_end_point": _point(new, new_end),
    }


def _common_prefix(a: bytes, b: bytes, limit: int) -> int:
    """Length of the common prefix of `a` and `b` (at most `limit`), by bisection over slice
    comparisons: each is a memcmp in C, where a byte-by-byte loop in Python took 0.2 s on a
    100 kB file."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _point(source: bytes, offset: int) -> tuple[int, int]:
    row = source.count(b"\n", 0, offset)
    return row, offset - (source.rfind(b"\n", 0, offset) + 1)
