"""What `bench next-edits` measures, whatever the language of its truth: the scripted changes
of one function and the places each affects."""

from __future__ import annotations

from dataclasses import dataclass

Place = tuple[str, int, int]
"""(path, row, code-point column)."""


class ToolMissing(Exception):
    """The truth's toolchain is not installed (the message says how to install it)."""


@dataclass(frozen=True)
class Case:
    """One function's scripted changes: its defining file (path relative to the repository)
    and text, and per change kind the edited text and the places the truth says it affects."""

    path: str
    name: str
    text: str
    changes: dict[str, tuple[str, set[Place]]]
