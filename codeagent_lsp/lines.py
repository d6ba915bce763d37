"""LSP's line model, the one every position, edit and line count of a document uses.

LSP ends lines at `\\n`, `\\r\\n` and `\\r` only. Python's `str.splitlines` also ends them at
form feed, vertical tab, `\\x1c`-`\\x1e`, `\\x85`, U+2028 and U+2029, so a file whose functions
are separated by a `^L` line has more lines for Python than for the editor, and every position
after that line would point elsewhere. Nothing here imports pygls: a position is (line,
character), where character counts the client's units (`units` gives the units of a string:
UTF-16 code units, UTF-8 bytes or code points, as negotiated).
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Iterator

LINE_BREAK = re.compile(r"\r\n?|\n")
_LONE_CR = re.compile(rb"\r(?!\n)")

Units = Callable[[str], int]
"""The client's units of a string (the negotiated position encoding)."""


def code_points(text: str) -> int:
    """UTF-32: one unit per code point."""
    return len(text)


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", errors="surrogatepass")) // 2


def utf8_units(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


UNITS: dict[str, Units] = {"utf-8": utf8_units, "utf-16": utf16_units, "utf-32": code_points}
"""Each LSP position encoding's units, counted by encoding the string (pygls counts them one
character at a time in Python: seconds on a line of megabytes)."""


def split_lines(text: str, keepends: bool = False) -> list[str]:
    """The lines of `text` as LSP sees them. Unlike `splitlines`, a text ending with a line
    break has one more (empty) line, as an editor shows it; with `keepends` the last element
    is the text after the last break, which may be empty."""
    if keepends:
        starts = line_starts(text)
        return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
    return LINE_BREAK.split(text)


def line_starts(text: str, limit: int | None = None) -> list[int]:
    """Code-point offset where each line starts (the first is 0); with `limit`, only the
    first `limit + 1` (the text is scanned no further than needed)."""
    return [0, *itertools.islice(_break_ends(text), limit)]


def _break_ends(text: str) -> Iterator[int]:
    """Where each line break ends. Without `\r`, str.find (memchr) jumps from break to break,
    where the regex would step through a line of megabytes one character at a time."""
    if "\r" in text:
        yield from (match.end() for match in LINE_BREAK.finditer(text))
        return
    at = text.find("\n")
    while at >= 0:
        yield at + 1
        at = text.find("\n", at + 1)


def line_count(text: str) -> int:
    return len(line_starts(text))


def _content_end(text: str, starts: list[int], line: int) -> int:
    """Offset of the end of a line's text, before its line break."""
    if line + 1 >= len(starts):
        return len(text)
    end = starts[line + 1]
    return end - 2 if text.startswith("\r\n", end - 2) else end - 1


def to_offset(text: str, line: int, character: int, units: Units = code_points) -> int:
    """Code-point offset of an LSP position. As the specification says, a character past the
    line's end means the line's end; a line past the last one means the end of the text. A
    character inside a character of several units (half a surrogate pair) rounds up. Costs a
    scan up to the line and a few encodings of it, never a Python step per character: a
    document may be one line of megabytes."""
    starts = line_starts(text, max(line, 0) + 1)
    if line >= len(starts):
        return len(text)
    start, end = starts[max(line, 0)], _content_end(text, starts, max(line, 0))
    # Every character is at least one unit: the answer is at most `character` characters in.
    high = min(end, start + max(character, 0))
    if units(text[start:high]) == high - start:  # one unit each: no search
        return high
    low = start  # the first offset whose prefix holds `character` units
    while low < high:
        mid = (low + high) // 2
        if units(text[start:mid]) >= character:
            high = mid
        else:
            low = mid + 1
    return low


def to_position(
    text: str, offset: int, units: Units = code_points, starts: list[int] | None = None
) -> tuple[int, int]:
    """LSP (line, character) of a code-point offset (clamped to the text). An offset inside a
    line break (between `\\r` and `\\n`) is the end of that line. `starts`: the text's
    `line_starts`, when the caller converts many offsets."""
    offset = min(max(offset, 0), len(text))
    starts = line_starts(text) if starts is None else starts
    line = bisect.bisect_right(starts, offset) - 1
    end = min(offset, _content_end(text, starts, line))
    return line, units(text[starts[line] : end])


def parser_source(source: bytes) -> bytes:
    """`source` as every parser must read it: each lone `\\r` becomes `\\n`, so tree-sitter,
    which ends rows at `\\n` only, counts LSP's lines (and tree-sitter-python, which would
    read a lone `\\r` as a space and mis-parse the file, sees the line ends an editor shows).
    Same length: every byte offset holds. `\\r\\n` stays one line end."""
    if b"\r" not in source:
        return source
    return _LONE_CR.sub(b"\n", source)


class Points:
    """Converts parser points of one text (rows are LSP lines when the parser read
    `parser_source`; columns in code points) to LSP positions in the client's units."""

    def __init__(self, text: str, units: Units = code_points) -> None:
        self.text, self.units = text, units
        self._starts = line_starts(text)

    def position(self, row: int, column: int) -> tuple[int, int]:
        """A row past the last is the end of the text; a column past the row's end, its end."""
        if row >= len(self._starts):
            return to_position(self.text, len(self.text), self.units, self._starts)
        start = self._starts[row]
        offset = min(start + column, _content_end(self.text, self._starts, row))
        return to_position(self.text, offset, self.units, self._starts)
