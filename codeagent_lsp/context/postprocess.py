"""Clean up the raw fill-in-the-middle text the model returns for a cursor.

First the model's text is fitted to what is typed on the cursor's line (`fit_to_line`: the
one place that drops non-code, drops what repeats the typed line and sets the indentation of
the block); every later rule only *removes* text, so what is shown is a prefix of that.

Indentation is measured with tabs expanded to 4 columns; files mix tabs and spaces rarely
enough that comparing widths within one file is sound.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from codeagent_lsp.codegraph import words

__all__ = ["fit_to_line", "opens_block", "postprocess", "stop_early", "wants_multiline"]

_BRACKETS = "()[]{}"
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

    @functools.cached_property
    def pending(self) -> int:
        """How many brackets the prefix left open that only the suggestion can close (the
        innermost ones the suffix does not close; 0 when code follows the cursor on its line)."""
        return 0 if self.rest.strip() else _pending(self)

    def next_line(self) -> str | None:
        """The first non-blank line after the cursor line."""
        match = _NONBLANK_LINE.search(self.after)
        return match.group() if match else None


def wants_multiline(prefix: str, suffix: str) -> bool:
    """Whether the cursor asks for a block rather than the rest of one line.

    Single line when code follows the cursor on its line. Several lines when a bracket the
    prefix opened (on this or an earlier line) is left open by the suffix, so only the
    suggestion can close it; when the cursor line ends with a block opener (`:`, `{`, `(`,
    `[`, `=>`, `do`, `then`, `else`, `begin`, `repeat`, `do |x|`; a trailing comment is
    ignored); when it is blank and the line directly before ends with one, or when it is
    blank inside an indented body: the cursor line is indented, or both the previous and the
    next non-blank lines are. Otherwise single line.
    """
    cur = _Cursor.of(prefix, suffix)
    if cur.rest.strip():
        return False
    if cur.pending:
        return True
    if cur.line.strip():
        return opens_block(cur.line)
    if cur.before and opens_block(cur.before.rpartition("\n")[2]):
        return True
    return _in_indented_body(cur)


def postprocess(
    raw: str,
    prefix: str,
    suffix: str,
    *,
    multiline: bool,
    max_lines: int = 16,
    truncated: bool = False,
) -> str:
    """Return the part of `raw` worth showing at the cursor, or "" when there is none.

    In order:
    - `\\r\\n` and lone `\\r` become `\\n`; trailing whitespace is dropped.
    - Multi-line, `truncated` (the token limit ended `raw`): its last line is unfinished and
      dropped, and so are the lines before it back to one that leaves nothing the suggestion
      opened still open (a string, a comment, a bracket of its own) and is not a comment or
      blank: they led into what was cut. The first line always stays.
    - Single line: keep the first line only (so output starting with a newline is empty).
      Multi-line: the body indentation is that of the first non-blank line of the
      completion (its first line sits on the cursor line, with that line's indentation);
      the first later non-blank line indented less ends the suggestion. If that line is a
      closer (`}`, `)`, `]`, `end`, `fi`, ...) at the indentation of the line that opened
      the block it is kept as the block's end (brace languages, Python literals); when it
      reopens a block (`} else {`) only its closing token is kept. Python's dedented
      `else:` or next `def` is not a closer and is cut. A later line that dedents to a width
      between two open levels (the model lost the block) is cut with what follows. At most
      `max_lines` lines remain.
    - Brackets the prefix left open and the suffix does not close (see `wants_multiline`):
      the lines inside them continue the statement whatever their indentation, and the line
      that closes them ends the suggestion unless it opens a block.
    - The first completion line equal to the next non-blank line of the suffix (same
      indentation) is cut with what follows: the model is repeating existing code.
    - When the rest of the cursor line is blank, the suggestion never re-types the code that
      follows it: from the first token where the suggestion's remaining code equals the start
      of the suffix's code, whole first non-blank suffix line at least, spacing and line breaks
      aside, it is cut (a statement written whole on one line before its own continuation
      lines keeps only what they lack).
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
    return _postprocess(raw, _Cursor.of(prefix, suffix), multiline, max_lines, truncated)


def _postprocess(
    raw: str, cur: _Cursor, multiline: bool, max_lines: int, truncated: bool = False
) -> str:
    text = _fit(raw, cur)
    if truncated and multiline:
        text = _drop_unfinished(text)
    # Single line: what follows the first newline is not for this line.
    text = _cut_block(text, cur, max(1, max_lines)) if multiline else text.partition("\n")[0]
    text = _cut_repeated_suffix_line(text, cur)
    text = _cut_retyped_suffix(text, cur)
    text = _trim_overlap(text, cur.rest)
    text = _cut_unbalanced(text, cur)
    if not text.strip() or _repeats_previous(text, cur):
        return ""
    return text


def fit_to_line(raw: str, prefix: str, suffix: str) -> str:
    """The model's text made to fit what is typed on the cursor's line (before any cut):

    - text that is not code is dropped: a markdown fence line ends the text (a fence that
      opens it is skipped, and the code inside kept), and so does a model control token
      written out (`<|endoftext|>`, `<|file_sep|>`);
    - the first line continues the cursor's line: indentation or a word already typed there
      is not repeated (`    da` + `    data = 1` gives `ta = 1`; `fläc` + `fläche` gives `he`),
      and a line written as a line of its own (indented, its newline left out) is dropped;
    - on a line holding only indentation, the first line is indented where the block wants
      it (one step inside a block the line before opens), and the later lines keep their
      indentation relative to the first: the whole suggestion moves as one block.

    The model writes indentation in one of two frames: from the start of the line (it repeats
    what is typed) or after what is typed (it continues it). The later lines tell which one
    (after a block opener they must be deeper); when they cannot, an indented first line is
    taken as written from the line's start (the repeat users saw), an unindented one as
    continuing what is typed.
    """
    return _fit(raw, _Cursor.of(prefix, suffix))


def _fit(raw: str, cur: _Cursor) -> str:
    text = _code_only(_normalise(raw).rstrip())
    if not text.strip():
        return ""
    if cur.line.strip():
        return _continue_typed(text, cur)
    return _indent_as_block(text, cur)


def stop_early(
    prefix: str, suffix: str, *, multiline: bool, max_lines: int = 16
) -> Callable[[str], bool]:
    """A check for the engine, called with the text generated so far: True once `postprocess`
    would cut what follows anyway, so no token is generated only to be thrown away, or once
    the statement that closes the brackets the suggestion must close is written (and opens no
    block). While such a bracket is open it does not stop, unless `postprocess` cut earlier."""
    cur = _Cursor.of(prefix, suffix)  # once: the bracket scan is not repeated per line

    def should_stop(text: str) -> bool:
        if not multiline:
            return "\n" in text
        if not text.endswith("\n"):  # judge whole lines only
            return False
        done = text.rstrip()
        if _code_only(done + "\nx") == _code_only(done):
            return True  # the code ended (a closing fence, a control token)
        fitted = _fit(done, cur)
        kept = _postprocess(done, cur, True, max_lines)
        return len(kept) < len(fitted) or _closes_statement(fitted, cur)

    return should_stop


_FENCE = re.compile(r"[ \t]*(?:```|~~~)")
_CONTROL_TOKEN = re.compile(r"<\|[A-Za-z_][\w.-]{0,40}\|>|</s>|<(?:fim|file|repo)_[a-z_]+>")
_DEFAULT_STEP = 4


def _code_only(text: str) -> str:
    """`text` up to its first control token or markdown fence (a fence that opens the text
    is skipped: the code inside it is kept, up to the fence that closes it)."""
    control = _CONTROL_TOKEN.search(text)
    if control is not None:
        text = text[: control.start()]
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    start = first + 1 if first < len(lines) and _FENCE.match(lines[first]) else 0
    end = next((i for i in range(start, len(lines)) if _FENCE.match(lines[i])), len(lines))
    return "\n".join(lines[start:end]).rstrip()


def _continue_typed(text: str, cur: _Cursor) -> str:
    """Drop from the first line what the cursor's line already holds: the model may start the
    line again (all of its code, indentation aside) or repeat the word being typed. Later lines
    move with the first: they were written relative to the line the model started."""
    first, newline, later = text.partition("\n")
    typed = cur.line.lstrip()
    stripped = first.lstrip()
    # One bracket typed and one written could be "((": only a word or more is a repeat.
    if stripped.startswith(typed) and (len(typed) > 1 or words.is_part(typed)):
        shift = _width(cur.line) - _width(first)
        return stripped[len(typed) :] + newline + _shift_lines(later, shift, cur)
    word = cur.line[words.word_start(cur.line, len(cur.line)) :]
    if word and first.startswith(word) and len(first) > len(word):
        return first[len(word) :] + newline + later
    if first[:1] in (" ", "\t") and _width(first) >= max(2, _width(cur.line)):
        return ""  # a line of its own, newline left out: accepted, it would join the typed one
    return text


def _indent_as_block(text: str, cur: _Cursor) -> str:
    """On a line holding only indentation: the first line at the block's indentation (never
    repeating what is typed), later lines moved with it."""
    lines = text.split("\n")
    first = lines[0]
    if not first.strip():
        return text  # the text starts on a later line: nothing typed to continue
    typed, model = _width(cur.line), _width(first)
    step = _step(cur.before)
    frame = _frame(lines, typed, model, step)
    final = max(typed, frame, _least_width(cur, typed, step))
    deepest = _most_width(cur, typed, step)
    if deepest is not None:
        final = min(final, deepest)
    unit = _indent_unit(cur)
    wanted = _indentation(final, unit)
    lead = wanted[len(cur.line) :] if wanted.startswith(cur.line) else " " * max(0, final - typed)
    later = _shift_lines("\n".join(lines[1:]), final - frame, cur)
    return lead + first.lstrip() + ("\n" + later if len(lines) > 1 else "")


def _frame(lines: list[str], typed: int, model: int, step: int) -> int:
    """The width the model meant for its first line: `model` if it wrote the line from its
    start, `typed + model` if it continued after the typed indentation. The next non-blank
    line decides: one step deeper after a block opener, one step out when it closes the
    enclosing block, else level with the first; a tie goes to the line's start."""
    following = next((line for line in lines[1:] if line.strip()), None)
    if typed == 0 or following is None:
        return model or typed
    after, candidates = _width(following), (model, typed + model)
    if opens_block(lines[0]):
        fits = {c: abs(after - c - step) for c in candidates if after > c}
    elif _BLOCK_CLOSER.fullmatch(following.rstrip(" \t;,")):
        fits = {c: abs(c - after - step) for c in candidates if after < c}
    else:  # a dedented line after an unindented one ends the block rather than telling
        fits = {c: 0 for c in candidates if after == c} if model else {}
    if not fits:  # no evidence: a line written without indentation continues what is typed
        return model or typed
    return min(fits, key=fits.__getitem__)


def _least_width(cur: _Cursor, typed: int, step: int) -> int:
    """The least indentation of the first line: inside the block the line before opens (the
    typed indentation when it is already inside, else one step in), else none."""
    previous = _last_nonblank_lines(cur.before, 1)
    if not previous or not opens_block(previous[0]):
        return 0
    opener = _width(previous[0])
    return typed if typed > opener else opener + step


def _most_width(cur: _Cursor, typed: int, step: int) -> int | None:
    """The deepest the first line may go: one step inside the block the line before opens,
    else that line's width (what is typed, when deeper). None where any indentation goes:
    inside a bracket, string or comment the prefix left open, after a `\\` continuation."""
    previous = next(
        (line for line in _lines_backwards(cur.before) if line.strip() and not _comment(line)),
        None,
    )
    if previous is None:
        return typed
    if previous.rstrip().endswith("\\") or _open_at_end(_prefix_tail(cur)):
        return None
    deepest = _width(previous) + (step if opens_block(previous) else 0)
    return max(typed, deepest)


def _comment(line: str) -> bool:
    """A whole-line comment: its indentation says nothing about the code's."""
    return line.lstrip().startswith(_COMMENTS)


def _step(text: str) -> int:
    """The file's indentation step: the most common increase from one line to the next."""
    widths = [_width(line) for line in text.split("\n")[-400:] if line.strip()]
    steps = Counter(b - a for a, b in itertools.pairwise(widths) if b > a)
    return steps.most_common(1)[0][0] if steps else _DEFAULT_STEP


def _indent_unit(cur: _Cursor) -> str:
    """A tab when the code around the cursor indents with tabs, else a space."""
    previous = _last_nonblank_lines(cur.before, 1)
    sample = cur.line or (previous[0] if previous else "")
    return "\t" if sample.startswith("\t") else " "


def _indentation(width: int, unit: str) -> str:
    return "\t" * (width // 4) + " " * (width % 4) if unit == "\t" else " " * width


def _shift_lines(text: str, shift: int, cur: _Cursor) -> str:
    """Every non-blank line of `text` indented `shift` columns more (or less, down to none)."""
    if not shift or not text:
        return text
    unit = _indent_unit(cur)
    return "\n".join(
        _indentation(max(0, _width(line) + shift), unit) + line.lstrip() if line.strip() else line
        for line in text.split("\n")
    )


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def _balance(text: str, opened_before: str = "") -> tuple[list[str], list[str]]:
    """Openers left open, and closers with no opener, in one line (which starts inside the
    string or comment `opened_before`, if any)."""
    opened: list[str] = []
    unmatched: list[str] = []
    for _at, ch in _lex(text, opened_before).brackets:
        if ch in _OPENERS:
            opened.append(ch)
        elif opened:
            opened.pop()
        else:
            unmatched.append(ch)
    return opened, unmatched


def opens_block(line: str) -> bool:
    """Does the line end by opening a block (`:`, `{`, `(`, `=>`, `do`, ...; comments and
    strings aside)?"""
    lexed = _lex(line)
    code = line[: lexed.open_at].rstrip() if lexed.open in _COMMENTS else line.rstrip()
    if lexed.open not in ("", *_COMMENTS) or code.endswith("::"):  # in a string; C++/Rust's ::
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


# Bracket counting over several lines (a bounded tail of the prefix, head of the suffix): the
# lexemes that hide brackets. Strings in triple quotes and backticks span lines, others end at
# their line (a stray quote, a Rust lifetime, hides the rest of its line only). A regular
# expression finds the next lexeme, so the Python loop runs per lexeme, not per character.
_LEXEME = re.compile(r"\"\"\"|'''|[`\"']|//|/\*|(?:(?<=\s)|^)#|[()\[\]{}]", re.MULTILINE)
_LEXEME_END = {
    '"""': re.compile(r'(?:\\.|[^\\])*?"""', re.DOTALL),
    "'''": re.compile(r"(?:\\.|[^\\])*?'''", re.DOTALL),
    "`": re.compile(r"(?:\\.|[^\\`])*`", re.DOTALL),
    '"': re.compile(r'(?:\\.|[^\\"\n])*"'),
    "'": re.compile(r"(?:\\.|[^\\'\n])*'"),
    "/*": re.compile(r".*?\*/", re.DOTALL),
    "//": re.compile(r".*"),
    "#": re.compile(r".*"),
}
# How far from the cursor brackets are counted: a bracket left open further up is rare, and
# the scan runs on every request (a whole-file prefix would cost milliseconds per keystroke).
_SCAN_CHARS = 8192


@dataclass(frozen=True)
class _Lexed:
    brackets: list[tuple[int, str]]  # (index, bracket) of each bracket in code
    open: str = ""  # the string or comment lexeme the text ends inside ('"', '"""', "#"), or ""
    open_at: int = -1  # where that lexeme starts; -1 when the text started inside it

    @property
    def inside(self) -> bool:
        """The text ends inside a string or comment."""
        return bool(self.open)


def _lex(text: str, opened: str = "") -> _Lexed:
    """The brackets of `text` that are code, not in strings or comments, over any lines.
    `opened` is a lexeme the text starts inside (a quote the line before left open)."""
    brackets: list[tuple[int, str]] = []
    pos, lexeme, start = 0, opened, -1
    while True:
        if lexeme:
            end = _LEXEME_END[lexeme].match(text, pos)
            line_end = text.find("\n", pos)
            if end is not None and (end.end() < len(text) or lexeme not in ("//", "#")):
                pos = end.end()
            elif end is None and lexeme in ('"', "'") and line_end >= 0:
                pos = line_end  # a quote its line does not close hides that line only
            else:
                return _Lexed(brackets, lexeme, start)
        found = _LEXEME.search(text, pos)
        if found is None:
            return _Lexed(brackets)
        lexeme, start, pos = found.group(), found.start(), found.end()
        if lexeme in _BRACKETS:
            brackets.append((start, lexeme))
            lexeme = ""


def _pending(cur: _Cursor) -> int:
    """How many of the innermost brackets left open by the prefix's tail the suggestion must
    close: those the suffix's head does not close. The suffix's unmatched closers close the
    prefix's openers from the innermost depth where they match outwards (closers past the
    tail's outermost opener close brackets above it); the suggestion closes the ones inside
    that depth, all of them when the suffix has no closer. 0 when the prefix ends in a string
    or comment, or the suffix's closers match at no depth."""
    return _pending_between(_prefix_tail(cur), f"{cur.rest}\n{cur.after[:_SCAN_CHARS]}")


def _prefix_tail(cur: _Cursor) -> str:
    """The last _SCAN_CHARS of the prefix, from a line start (a line cut in half may start in
    a string)."""
    prefix = f"{cur.before[-_SCAN_CHARS:]}\n{cur.line}"
    return prefix[-_SCAN_CHARS:].partition("\n")[2] if len(prefix) > _SCAN_CHARS else prefix


@functools.lru_cache(maxsize=8)
def _opened(prefix: str) -> tuple[_Bracket, ...] | None:
    """The brackets `prefix` leaves open, outermost first; None when it ends in a string or
    comment. Cached: one request asks for the same cursor several times."""
    lexed = _lex(prefix)
    return None if lexed.inside else tuple(_pair_up(prefix, lexed)[0])


def _open_at_end(prefix: str) -> bool:
    """Whether `prefix` ends inside a bracket, string or comment."""
    opened = _opened(prefix)
    return opened is None or bool(opened)


# One request asks for the same cursor several times (the multi-line choice when its prompt
# is built and again for its answer, post-processing, the early stop): one scan per text.
@functools.lru_cache(maxsize=8)
def _pending_between(prefix: str, suffix: str) -> int:
    """`_pending` of a prefix tail and a suffix head."""
    opened = list(_opened(prefix) or ())
    if not opened:
        return 0
    closers = _pair_up(suffix, _lex(suffix))[1]
    if not closers:
        return len(opened)
    for inner in range(len(opened)):
        outer = opened[: len(opened) - inner][::-1]
        if all(_closes(c, o) for c, o in zip(closers, outer, strict=False)):
            return inner
    return 0


class _Bracket(NamedTuple):
    char: str
    width: int  # indentation of its line
    first: bool  # nothing but indentation before it on its line


def _pair_up(text: str, lexed: _Lexed) -> tuple[list[_Bracket], list[_Bracket]]:
    """The openers `text` leaves open (outermost first) and its closers with no opener in it
    (in order). A closer closes the nearest opener of its kind: one mistyped in between is
    dropped."""
    opened: list[_Bracket] = []
    unmatched: list[_Bracket] = []
    for at, char in lexed.brackets:
        start = text.rfind("\n", 0, at) + 1
        bracket = _Bracket(char, _width(text[start : at + 1]), not text[start:at].strip())
        kinds = [b.char for b in opened]
        if char in _OPENERS:
            opened.append(bracket)
        elif _PAIR[char] in kinds:
            del opened[len(kinds) - 1 - kinds[::-1].index(_PAIR[char]) :]
        else:
            unmatched.append(bracket)
    return opened, unmatched


def _closes(closer: _Bracket, opener: _Bracket) -> bool:
    """Whether `closer` can close `opener`: the same kind, and when it starts its line, the
    same indentation as the opener's line (a function's `}` does not close a literal's `{`
    opened inside it)."""
    same_line_style = not closer.first or closer.width == opener.width
    return _PAIR[closer.char] == opener.char and same_line_style


def _closing_line(text: str, pending: int) -> int | None:
    """The index of the line of `text` on which `pending` brackets opened before it are
    closed; None while they stay open."""
    depth = pending
    for at, ch in _lex(text).brackets:
        depth += 1 if ch in _OPENERS else -1
        if depth <= 0:
            return text.count("\n", 0, at)
    return None


def _closes_statement(text: str, cur: _Cursor) -> bool:
    """Whether `text` closes the brackets it must close on a line that opens no block."""
    if not cur.pending:
        return False
    closed = _closing_line(text, cur.pending)
    return closed is not None and not opens_block(text.split("\n")[closed])


def _drop_unfinished(text: str) -> str:
    """`text` cut by the token limit, back to its last line that leaves nothing of its own
    open and is code (see `postprocess`); never below its first line."""
    lines = text.split("\n")
    if len(lines) > 1:
        lines.pop()  # the line the limit cut
    while len(lines) > 1 and not _finished("\n".join(lines)):
        lines.pop()
    return "\n".join(lines)


def _finished(text: str) -> bool:
    """Whether `text` ends on a line of code with nothing it opened still open."""
    last = text.rpartition("\n")[2].strip()
    if not last or last.startswith(_COMMENTS):
        return False
    lexed = _lex(text)
    return not lexed.inside and not _pair_up(text, lexed)[0]


_COMMENTS = ("#", "//", "/*")


def _cut_block(text: str, cur: _Cursor, max_lines: int) -> str:
    """Stop where the block being written ends, judging by indentation. Inside brackets the
    suggestion must close, lines continue the statement whatever their indentation; the line
    that closes them ends the suggestion, unless it opens a block: a header's `):` or `) {`
    is followed by its block, a `} else {` is judged by indentation like any line."""
    lines = text.split("\n")
    start = 1
    if cur.pending:
        closed = _closing_line(text, cur.pending)
        if closed is None:
            return "\n".join(lines[:max_lines]).rstrip()
        if not opens_block(lines[closed]):
            return "\n".join(lines[: min(closed + 1, max_lines)]).rstrip()
        start = max(1, closed if lines[closed].lstrip().startswith("}") else closed + 1)
    body = _body_width(lines, cur)
    if body is not None:
        opener = _opener_width(cur, body)
        levels = [body]  # indentation of the blocks open in the suggestion, outermost first
        for i, line in enumerate(lines[start:], start=start):
            if line.strip() and _width(line) < body:
                end = _closing_part(line) if _width(line) == opener else ""
                lines = [*lines[:i], end]
                break
            if line.strip() and not _indent_fits(levels, _width(line)):
                lines = lines[:i]  # a dedent to no open level: the model lost the block
                break
    return "\n".join(lines[:max_lines]).rstrip()


def _indent_fits(levels: list[int], width: int) -> bool:
    """Whether a line at `width` goes deeper or back to an open level (`levels`, the widths
    of the open blocks, updated); a dedent between two levels fits none (Python rejects it)."""
    dedented = levels[-1] > width
    while levels[-1] > width:
        levels.pop()
    if levels[-1] == width:
        return True
    levels.append(width)
    return not dedented


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
    return match.group() if opens_block(line) else line


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


_TOKEN_START = re.compile(r"\w+|\S")
_SPACE = re.compile(r"\s+")


def _cut_retyped_suffix(text: str, cur: _Cursor) -> str:
    """Cut the suggestion from the first token where its code (whitespace aside) is the
    suffix's next code, covering at least the first non-blank suffix line: accepted, that
    text would stand twice. A tail of punctuation alone is left to the bracket rules."""
    following = cur.next_line()
    if cur.rest.strip() or following is None:
        return text
    needed = len(_SPACE.sub("", following))
    # The suffix may be a whole file: only as much of it as the suggestion could re-type.
    ahead = _SPACE.sub("", cur.after[: 4 * len(text) + len(following) + 256])
    for token in _TOKEN_START.finditer(text):
        tail = _SPACE.sub("", text[token.start() :])
        if len(tail) < needed:
            break
        if ahead.startswith(tail) and re.search(r"\w", tail):
            return text[: token.start()].rstrip()
    return text


def _trim_overlap(text: str, rest: str) -> str:
    for size in range(min(len(text), len(rest)), 0, -1):
        if text.endswith(rest[:size]):
            return text[:-size]  # whitespace left before the overlap is still meaningful
    return text


def _cut_unbalanced(text: str, cur: _Cursor) -> str:
    """Cut the suggestion's cursor line at the first closer that would unbalance it."""
    first = text.partition("\n")[0]
    head = _lex(cur.line).open  # the string or comment the cursor is in, if any
    opened = _balance(cur.line)[0]
    claimed = _suffix_closers(cur, head)
    budget = _closable(opened, claimed)
    own: list[str] = []
    escaped = 0  # closers that reached past the suggestion's own openers
    for i, ch in _lex(first, head).brackets:
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


def _suffix_closers(cur: _Cursor, opened_before: str) -> list[str]:
    """Closers the suffix brings with no opener of its own, nearest first."""
    if cur.rest.strip():
        return _balance(cur.rest, opened_before)[1]
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
