"""Clean up the raw fill-in-the-middle text the model returns for a cursor.

Every rule here only *removes* text: the result is always a prefix of the model's output
after newline normalisation, so nothing is shown that the model did not write.

Indentation is measured with tabs expanded to 4 columns; files mix tabs and spaces rarely
enough that comparing widths within one file is sound.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["postprocess", "stop_early", "wants_multiline"]

_QUOTES = "\"'`"
_OPENERS = "([{"
_PAIR = {")": "(", "]": "[", "}": "{"}
# End of a line that opens a block: Python/YAML ':', C-like braces and brackets, JS arrows,
# and the keywords Ruby, Lua, shell and Pascal open bodies with.
_BLOCK_OPENER = re.compile(r"(?:[:{(\[]|=>|\b(?:do|then|else|begin|repeat)|\bdo\s*\|[^|]*\|)$")
# A line that closes a block: brackets, or the keyword ends of Ruby/Lua and shell.
_BLOCK_CLOSER = re.compile(r"[ \t]*(?:[)\]}]+|end\b|fi\b|done\b|esac\b)")
_NONBLANK_LINE = re.compile(r"^.*\S.*$", re.MULTILINE)


@dataclass(frozen=True)
class _Cursor:
    """The document around the cursor, split at the cursor's line."""

    before: str  # prefix up to the start of the cursor line
    line: str  # cursor line up to the cursor
    rest: str  # cursor line after the cursor
    after: str  # suffix after the cursor line

    @classmethod
    def of(cls, prefix: str, suffix: str) -> _Cursor:
        before, _, line = _normalise(prefix).rpartition("\n")
        rest, _, after = _normalise(suffix).partition("\n")
        return cls(before, line, rest, after)

    def next_line(self) -> str | None:
        """The first non-blank line after the cursor line."""
        match = _NONBLANK_LINE.search(self.after)
        return match.group() if match else None


@dataclass(frozen=True)
class _Scan:
    brackets: list[int]  # indices of brackets in code, not in strings or comments
    quote: str  # quote still open at the end, "" when the text ends in code
    comment: int  # where a line comment starts, len(text) when there is none


def wants_multiline(prefix: str, suffix: str) -> bool:
    """Whether the cursor asks for a block rather than the rest of one line.

    Single line when code follows the cursor on its line. Several lines when the cursor line
    ends with a block opener (`:`, `{`, `(`, `[`, `=>`, `do`, `then`, `else`, `begin`,
    `repeat`, `do |x|`; a trailing comment is ignored), when it is blank and the line directly
    before ends with one, or when it is blank inside an indented body: the cursor line is
    indented, or both the previous and the next non-blank lines are. Otherwise single line.
    """
    cur = _Cursor.of(prefix, suffix)
    if cur.rest.strip():
        return False
    if cur.line.strip():
        return _opens_block(cur.line)
    if cur.before and _opens_block(cur.before.rpartition("\n")[2]):
        return True
    return _in_indented_body(cur)


def postprocess(raw: str, prefix: str, suffix: str, *, multiline: bool, max_lines: int = 16) -> str:
    """Return the part of `raw` worth showing at the cursor, or "" when there is none.

    In order:
    - `\\r\\n` and lone `\\r` become `\\n`; trailing whitespace is dropped.
    - Single line: keep the first line only (so output starting with a newline is empty).
      Multi-line: the body indentation is that of the first non-blank line of the
      completion (its first line sits on the cursor line, with that line's indentation);
      the first later non-blank line indented less ends the suggestion. If that line is a
      closer (`}`, `)`, `]`, `end`, `fi`, ...) at the indentation of the line that opened
      the block it is kept as the block's end (brace languages, Python literals); when it
      reopens a block (`} else {`) only its closing token is kept. Python's dedented
      `else:` or next `def` is not a closer and is cut. At most `max_lines` lines remain.
    - The first completion line equal to the next non-blank line of the suffix (same
      indentation) is cut with what follows: the model is repeating existing code.
    - The longest end of the suggestion that the rest of the cursor line starts with is
      trimmed (suggestion `c)` before suffix `)` gives `c`).
    - Brackets, on the text that lands on the cursor line: openers left open by the prefix's
      cursor line are counted; the suggestion may close only those the suffix does not
      close itself (the suffix's rest of line, or its next non-blank line when the rest is
      blank). A closer that would close an opener the suffix already closes, that mismatches
      its opener, or that has no opener on the line while the suffix holds the same unmatched
      closer, is cut together with everything after it. Openers the suggestion leaves
      unclosed stay unclosed: nothing is ever appended. Quotes and `#`, `//` and `/* */`
      comments on the same line are skipped while counting.
    - "" when what is left is blank, or just repeats the non-blank lines before the cursor.
    """
    cur = _Cursor.of(prefix, suffix)
    text = _normalise(raw).rstrip()
    # Single line: what follows the first newline is not for this line.
    text = _cut_block(text, cur, max(1, max_lines)) if multiline else text.partition("\n")[0]
    text = _cut_repeated_suffix_line(text, cur)
    text = _trim_overlap(text, cur.rest)
    text = _cut_unbalanced(text, cur)
    if not text.strip() or _repeats_previous(text, cur):
        return ""
    return text


def stop_early(
    prefix: str, suffix: str, *, multiline: bool, max_lines: int = 16
) -> Callable[[str], bool]:
    """A check for the engine, called with the text generated so far: True once `postprocess`
    would cut what follows anyway, so no token is generated only to be thrown away."""

    def should_stop(text: str) -> bool:
        if not multiline:
            return "\n" in text
        if not text.endswith("\n"):  # judge whole lines only
            return False
        done = text.rstrip()
        kept = postprocess(done, prefix, suffix, multiline=True, max_lines=max_lines)
        return len(kept) < len(done)

    return should_stop


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def _scan(text: str, quote: str = "") -> _Scan:
    """Find the brackets of one line that are code, skipping strings and comments."""
    brackets: list[int] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1  # the escaped char cannot end the string
            elif ch == quote:
                quote = ""
        elif ch in _QUOTES:
            quote = ch
        elif (skip := _comment_end(text, i)) >= len(text):
            return _Scan(brackets, quote, i)
        elif skip > i:
            i = skip
            continue
        elif ch in "()[]{}":
            brackets.append(i)
        i += 1
    return _Scan(brackets, quote, len(text))


def _comment_end(text: str, i: int) -> int:
    """Where a comment starting at `i` ends (len(text) for a line comment), else `i`."""
    if text.startswith("//", i) or (text[i] == "#" and (i == 0 or text[i - 1].isspace())):
        return len(text)  # '#' after a non-space is C's '#' or JS's private '#x', not Python's
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        return len(text) if end < 0 else end + 2
    return i


def _balance(text: str, quote: str = "") -> tuple[list[str], list[str]]:
    """Openers left open, and closers with no opener, in one line."""
    opened: list[str] = []
    unmatched: list[str] = []
    for i in _scan(text, quote).brackets:
        if text[i] in _OPENERS:
            opened.append(text[i])
        elif opened:
            opened.pop()
        else:
            unmatched.append(text[i])
    return opened, unmatched


def _opens_block(line: str) -> bool:
    scan = _scan(line)
    code = line[: scan.comment].rstrip()
    if scan.quote or code.endswith("::"):  # inside a string, or C++/Rust path separator
        return False
    return _BLOCK_OPENER.search(code) is not None


def _in_indented_body(cur: _Cursor) -> bool:
    if _width(cur.line) > 0:
        return True
    previous = _last_nonblank_lines(cur.before, 1)
    following = cur.next_line()
    return (
        bool(previous)
        and _width(previous[0]) > 0
        and following is not None
        and _width(following) > 0
    )


def _lines_backwards(text: str) -> Iterator[str]:
    """Lines of `text`, last first, without splitting a whole document up front."""
    end = len(text)
    while end >= 0:
        start = text.rfind("\n", 0, end) + 1
        yield text[start:end]
        end = start - 1


def _last_nonblank_lines(text: str, count: int) -> list[str]:
    found: list[str] = []
    for line in _lines_backwards(text):
        if len(found) == count:
            break
        if line.strip():
            found.append(line)
    return found[::-1]


def _cut_block(text: str, cur: _Cursor, max_lines: int) -> str:
    """Stop where the block being written ends, judging by indentation."""
    lines = text.split("\n")
    body = _body_width(lines, cur)
    if body is not None:
        opener = _opener_width(cur, body)
        for i, line in enumerate(lines[1:], start=1):
            if line.strip() and _width(line) < body:
                end = _closing_part(line) if _width(line) == opener else ""
                lines = [*lines[:i], end]
                break
    return "\n".join(lines[:max_lines]).rstrip()


def _body_width(lines: list[str], cur: _Cursor) -> int | None:
    if lines[0].strip():
        return _width(cur.line + lines[0])
    return next((_width(line) for line in lines[1:] if line.strip()), None)


def _opener_width(cur: _Cursor, body: int) -> int:
    """Indentation of the nearest line before the body that is indented less than it."""
    for line in _lines_backwards(f"{cur.before}\n{cur.line}"):
        if line.strip() and _width(line) < body:
            return _width(line)
    return -1


def _closing_part(line: str) -> str:
    """The part of a dedented line kept as the block's end: all of it, or just the closer."""
    match = _BLOCK_CLOSER.match(line)
    if match is None:
        return ""
    return match.group() if _opens_block(line) else line


def _cut_repeated_suffix_line(text: str, cur: _Cursor) -> str:
    following = cur.next_line()
    if cur.rest.strip() or following is None:
        return text  # mid-line: the overlap rule handles what follows the cursor
    target = following.expandtabs(4).rstrip()
    lines = text.split("\n")
    full = [cur.line + lines[0] if not cur.line.strip() else None, *lines[1:]]
    for i, line in enumerate(full):
        if line is not None and line.expandtabs(4).rstrip() == target:
            return "\n".join(lines[:i]).rstrip()
    return text


def _trim_overlap(text: str, rest: str) -> str:
    for size in range(min(len(text), len(rest)), 0, -1):
        if text.endswith(rest[:size]):
            return text[:-size]  # whitespace left before the overlap is still meaningful
    return text


def _cut_unbalanced(text: str, cur: _Cursor) -> str:
    """Cut the suggestion's cursor line at the first closer that would unbalance it."""
    first = text.partition("\n")[0]
    head = _scan(cur.line)
    opened = _balance(cur.line)[0]
    claimed = _suffix_closers(cur, head.quote)
    budget = _closable(opened, claimed)
    own: list[str] = []
    escaped = 0  # closers that reached past the suggestion's own openers
    for i in _scan(first, head.quote).brackets:
        ch = first[i]
        if ch in _OPENERS:
            own.append(ch)
        elif own:
            if own.pop() != _PAIR[ch]:
                return first[:i].rstrip()
        elif _may_close(ch, escaped, opened, claimed, budget):
            escaped += 1
        else:
            return first[:i].rstrip()
    return text


def _suffix_closers(cur: _Cursor, quote: str) -> list[str]:
    """Closers the suffix brings with no opener of its own, nearest first."""
    if cur.rest.strip():
        return _balance(cur.rest, quote)[1]
    following = cur.next_line()
    return _balance(following)[1] if following is not None else []


def _closable(opened: list[str], claimed: list[str]) -> int:
    """How many of the prefix line's innermost openers the suffix leaves for the suggestion."""
    free = len(opened) - len(claimed)
    if free < 0:
        return 0
    kept = opened[: len(claimed)]
    aligned = all(kept[-1 - k] == _PAIR[ch] for k, ch in enumerate(claimed))
    return free if aligned else 0  # a suffix that disagrees with the prefix: close nothing


def _may_close(ch: str, index: int, opened: list[str], claimed: list[str], budget: int) -> bool:
    if index < len(opened):
        return index < budget and opened[-1 - index] == _PAIR[ch]
    # The opener is on an earlier line: fine unless the suffix closes it too.
    spare = index - len(opened)
    return not (spare < len(claimed) and claimed[spare] == ch)


def _repeats_previous(text: str, cur: _Cursor) -> bool:
    """Whether the suggestion's lines are the non-blank lines just before the cursor."""
    if cur.line.strip() and not text.startswith("\n"):
        return False  # it continues the cursor line rather than writing new lines
    new = [line.strip() for line in text.split("\n") if line.strip()]
    before = f"{cur.before}\n{cur.line}" if cur.line.strip() else cur.before
    old = [line.strip() for line in _last_nonblank_lines(before, len(new))]
    return bool(new) and old == new
