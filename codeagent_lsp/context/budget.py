"""Fit the text around the cursor into token budgets without moving the cut at every keystroke.

If the prefix were "the last N tokens", its first token would change with each character typed
and no KV cache could be reused. The prefix is cut at a line start instead, and that line is kept
while the prefix still fits; when it no longer fits, the new cut leaves a quarter of the budget
free for the typing to come. The suffix is cut at a line end the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CountTokens = Callable[[str], int]

PREFIX_FILL = 0.75
SUFFIX_FILL = 0.9


@dataclass(frozen=True)
class Window:
    """Where the prompt's text starts and ends, as document line numbers (end exclusive)."""

    start_line: int
    end_line: int
    lines_below: int = 0
    """Document lines after `end_line`. Typing at the cursor, new lines included, leaves them
    alone, so the suffix keeps its end by this count rather than by `end_line`."""


@dataclass(frozen=True)
class Excerpt:
    prefix: str
    suffix: str
    window: Window


def fit(
    text: str,
    offset: int,
    prefix_budget: int,
    suffix_budget: int,
    count: CountTokens,
    previous: Window | None = None,
) -> Excerpt:
    """The prefix and suffix around `offset` within their budgets (exact, in tokens)."""
    before, after = text[:offset], text[offset:]
    head = before.split("\n")  # head[-1] is the cursor line up to the cursor
    tail = after.split("\n")  # tail[0] is the cursor line after the cursor
    cursor_line = len(head) - 1
    start = _prefix_start(head, cursor_line, prefix_budget, count, previous)
    end_rel = _suffix_end(tail, suffix_budget, count, previous)
    prefix = "\n".join(head[start:])
    if count(prefix) > prefix_budget:  # the cursor line alone is over budget
        prefix = _trim_left(prefix, prefix_budget, count)
    suffix = "\n".join(tail[:end_rel])
    return Excerpt(prefix, suffix, Window(start, cursor_line + end_rel, len(tail) - end_rel))


def _trim_left(text: str, budget: int, count: CountTokens) -> str:
    """The longest end of `text` within `budget` tokens (binary search on the cut). The search
    starts from ends that double in length, so a line of megabytes costs tokenizations of
    about the answer's length, not of the whole line."""
    size = max(budget, 1)
    while size < len(text) and count(text[-size:]) <= budget:
        size *= 2
    low, high = max(0, len(text) - size), len(text)
    while low < high:
        mid = (low + high) // 2
        if count(text[mid:]) <= budget:
            high = mid
        else:
            low = mid + 1
    return text[low:]


def _prefix_start(
    head: list[str], cursor_line: int, budget: int, count: CountTokens, previous: Window | None
) -> int:
    if (
        previous is not None
        and previous.start_line <= cursor_line
        and count("\n".join(head[previous.start_line :])) <= budget
    ):
        return previous.start_line
    start = _walk_back(head, int(budget * PREFIX_FILL), count)
    while start < cursor_line and count("\n".join(head[start:])) > budget:
        start += 1
    return start


def _walk_back(head: list[str], target: int, count: CountTokens) -> int:
    total = 0
    for line in range(len(head) - 1, -1, -1):
        total += count(head[line] + "\n")
        if total > target:
            return line + 1 if line + 1 < len(head) else line
    return 0


def _suffix_end(tail: list[str], budget: int, count: CountTokens, previous: Window | None) -> int:
    """How many of the suffix's lines (starting with the rest of the cursor line) to keep."""
    if budget <= 0:
        return 0
    if previous is not None:
        kept = len(tail) - previous.lines_below
        if kept > 0 and count("\n".join(tail[:kept])) <= budget:
            return kept
    kept, total, target = 0, 0, int(budget * SUFFIX_FILL)
    while kept < len(tail) and total + count(tail[kept] + "\n") <= target:
        total += count(tail[kept] + "\n")
        kept += 1
    while kept > 0 and count("\n".join(tail[:kept])) > budget:
        kept -= 1
    return kept
