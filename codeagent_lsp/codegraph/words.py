"""Identifiers by Unicode's rules (UAX #31, XID_Start and XID_Continue), in every language the
CodeGraph knows: Python, JavaScript/TypeScript, Go, Rust, Java, C and C++ all accept non-ASCII
letters in names (`fläche`, `größe`, `naïve`), and JavaScript, Java and C also accept `$`.
Python's `str.isidentifier` implements these classes; a regex has no name for them."""

from __future__ import annotations

import re

IDENTIFIER = re.compile(r"[^\W\d][\w$]*|\$[\w$]*")
"""Identifiers in text, for scanning: `\\w` is Unicode letters, digits and `_`. It misses
combining marks that are not letters (a decomposed `é`); `word_before` does not."""


def is_start(char: str) -> bool:
    """Can an identifier start with this character?"""
    return char == "$" or char.isidentifier()


def is_part(char: str) -> bool:
    """Can an identifier hold this character after its first?"""
    return char == "$" or ("_" + char).isidentifier()


def word_start(text: str, offset: int) -> int:
    """Where the identifier that ends at `offset` starts (`offset` when none does). Digits
    before it belong to it only behind a letter: `x2` is a word, `2` is not."""
    start = offset
    while start > 0 and is_part(text[start - 1]):
        start -= 1
    while start < offset and not is_start(text[start]):
        start += 1
    return start


def word_at(text: str, offset: int) -> str | None:
    """The identifier under or just before a code-point offset."""
    end = offset
    while end < len(text) and is_part(text[end]):
        end += 1
    start = word_start(text, end)
    return text[start:end] if start < end and start <= offset else None
