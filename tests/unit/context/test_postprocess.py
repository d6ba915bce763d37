"""Tests for cleaning raw fill-in-the-middle output: line mode, block ends, suffix overlap."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeagent_lsp.assistant import Assistant
from codeagent_lsp.bench.quality import Task, accepted_parses
from codeagent_lsp.context.postprocess import (
    _balance,
    _lex,
    fit_to_line,
    postprocess,
    stop_early,
    wants_multiline,
)
from codeagent_lsp.settings import Settings


def normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize(
    ("prefix", "suffix", "expected"),
    [
        pytest.param("def area(r):", "\n", True, id="py-def-colon"),
        pytest.param("def area(r):\n    ", "\n", True, id="py-indented-after-opener"),
        pytest.param("def area(r):\n", "\n", True, id="py-blank-after-opener"),
        pytest.param("if ready:  # why: ( not {\n", "", True, id="py-opener-before-comment"),
        pytest.param("def f():\n    x = 1\n    ", "\n", True, id="py-indented-body"),
        pytest.param("class A:\n    a = 1\n", "\n    b = 2\n", True, id="py-blank-in-class"),
        pytest.param("x = 1\n", "\nprint(x)\n", False, id="py-top-level-blank"),
        pytest.param("x = compute(", ")\n", False, id="py-mid-line"),
        pytest.param("x = 1", "\n", False, id="py-statement-end"),
        pytest.param("print('{')", "\n", False, id="py-brace-in-string"),
        pytest.param("items.forEach((x) =>", "\n", True, id="js-arrow"),
        pytest.param("function f() {", "\n}\n", True, id="js-brace"),
        pytest.param("const xs = [", "\n", True, id="js-bracket"),
        pytest.param("const s = 'a {'", "\n", False, id="js-brace-in-string"),
        pytest.param("func main() {\n\t", "\n}\n", True, id="go-tab-body"),
        pytest.param("\tfmt.Println(x)", "\n}\n", False, id="go-statement"),
        pytest.param("int main(void) {", "\n", True, id="c-brace"),
        pytest.param("    switch (c) {\n    case 1:", "\n", True, id="c-case-label"),
        pytest.param("std::", "\n", False, id="cpp-scope"),
        pytest.param("items.each do |x|", "\n", True, id="ruby-do"),
        pytest.param("if x then", "\n", True, id="lua-then"),
        pytest.param("", "", False, id="empty-document"),
    ],
)
def test_wants_multiline(prefix: str, suffix: str, expected: bool) -> None:
    assert wants_multiline(prefix, suffix) is expected


@pytest.mark.parametrize(
    ("raw", "prefix", "suffix", "multiline", "expected"),
    [
        # Single line in the middle of a line.
        pytest.param(
            "a, b\n    print(result)",
            "    result = compute(",
            ", c)\n",
            False,
            "a, b",
            id="py-mid-line-first-line-only",
        ),
        pytest.param("\n    return 1", "def f():", "\n", False, "", id="single-leading-newline"),
        # Blocks by indentation.
        pytest.param(
            "\n    return 3.14 * r * r\n\nprint(area(3))\n",
            "def area(r):",
            "\n\nprint(area(2))\n",
            True,
            "\n    return 3.14 * r * r",
            id="py-block-after-opener",
        ),
        pytest.param(
            "total += x\n    else:\n        total -= x",
            "for x in xs:\n    if x:\n        ",
            "\n",
            True,
            "total += x",
            id="py-dedent-ends-block",
        ),
        pytest.param(
            '"debug": True,\n    "port": 8080,\n}\nprint(CONFIG)',
            "CONFIG = {\n    ",
            "\n",
            True,
            '"debug": True,\n    "port": 8080,\n}',
            id="py-literal-closer-kept",
        ),
        pytest.param(
            "int s = 0;\n    for (int i = 0; i < n; i++) s += a[i];\n    return s;\n}\n\n"
            "int main(void) {",
            "int sum(int *a, int n) {\n    ",
            "\n",
            True,
            "int s = 0;\n    for (int i = 0; i < n; i++) s += a[i];\n    return s;\n}",
            id="c-closing-brace-kept",
        ),
        pytest.param(
            "return 1;\n    } else {\n        return 2;\n    }",
            "int f(int x) {\n    if (x) {\n        ",
            "\n}\n",
            True,
            "return 1;\n    }",
            id="c-else-keeps-only-closer",
        ),
        pytest.param(
            'fmt.Println("hi")\n}\n\nfunc other() {',
            "func main() {\n\t",
            "\n",
            True,
            'fmt.Println("hi")\n}',
            id="go-tabs-block",
        ),
        pytest.param(
            "console.log(item);\n});\nfoo();",
            "items.forEach((item) => {\n  ",
            "\n",
            True,
            "console.log(item);\n});",
            id="js-callback-close-kept",
        ),
        # The suffix already has the code.
        pytest.param(
            "console.log(item);\n});\nfoo();",
            "items.forEach((item) => {\n  ",
            "\n});\n",
            True,
            "console.log(item);",
            id="js-repeats-suffix-close",
        ),
        pytest.param(
            "int s = 0;\n    return s;\n}",
            "int sum(int *a, int n) {\n    ",
            "\n}\n",
            True,
            "int s = 0;\n    return s;",
            id="c-repeats-suffix-brace",
        ),
        pytest.param(
            "y = x * 2\n    return x",
            "def f(x):\n    ",
            "\n    return x\n",
            True,
            "y = x * 2",
            id="py-repeats-suffix-line",
        ),
        pytest.param(
            "return x", "def f(x):\n    ", "\n    return x\n", True, "", id="py-only-suffix-line"
        ),
        pytest.param("c)", "foo(a, b, ", ")\n", False, "c", id="overlap-paren"),
        pytest.param("c)", "foo(a, b", ")\n", False, "c", id="overlap-paren-brief"),
        pytest.param('hello";', 'const s = "', '";\n', False, "hello", id="js-overlap-quote"),
        pytest.param(", b)) {", "    if (check(a", ")) {\n", False, ", b", id="c-overlap-long"),
        pytest.param(")", "foo(x", ")\n", False, "", id="overlap-everything"),
        # Bracket balance.
        pytest.param("), c)", "print(max(a, b", ")\n", False, "), c", id="py-close-inner-only"),
        pytest.param(
            ', ", "))', "fmt.Println(strings.Join(parts", ")\n", False, ', ", ")', id="go-join"
        ),
        pytest.param(", 3)]", "const xs = [1, 2", "]\n", False, ", 3", id="js-mismatched-closer"),
        pytest.param(") * 2", "value = compute(x", ")\n", False, "", id="py-suffix-closes-it"),
        pytest.param("b)", "foo(\n    a,\n    ", "\n)\n", True, "b", id="py-closer-on-next-line"),
        pytest.param("b)", "foo(\n    a,\n    ", "\nbar()\n", True, "b)", id="py-closer-needed"),
        pytest.param("x)", "  call(\n    ", "\n}\n", True, "x)", id="js-other-closer-on-next-line"),
        pytest.param(' + ")")', 'print(f"(" + name', ")\n", False, ' + ")"', id="py-paren-in-str"),
        pytest.param(", 2 /* ) */", "  call(arg", ")\n", False, ", 2 /* ) */", id="c-comment"),
        pytest.param("a, b", "print(len(", ")\n", False, "a, b", id="unclosed-left-alone"),
        pytest.param("1]", "a(b[", "])\n", False, "1", id="suffix-closes-bracket"),
        # Nothing worth showing.
        pytest.param("x = compute()", "x = compute()\n", "", False, "", id="repeat-previous"),
        pytest.param(
            "a = 1\n    b = 2", "    a = 1\n    b = 2\n    ", "\n", True, "", id="repeat-two-lines"
        ),
        pytest.param("   \n\t\n", "x = ", "\n", True, "", id="whitespace-only-multi"),
        pytest.param("  \t ", "x = ", "\n", False, "", id="whitespace-only-single"),
        pytest.param("", "x = ", "\n", False, "", id="empty"),
        # Newlines.
        pytest.param("return a\r\nfoo", "    ", "\n", False, "return a", id="crlf-single"),
        pytest.param(
            "\r\n    return 1\r\n\r\nx = 2",
            "def f():",
            "\r\n",
            True,
            "\n    return 1",
            id="crlf-multi",
        ),
        pytest.param("return 1\rx = 2", "def f():\r\n    ", "", True, "return 1", id="lone-cr"),
        pytest.param("x = 1   \n", "", "", False, "x = 1", id="trailing-space"),
    ],
)
def test_postprocess(raw: str, prefix: str, suffix: str, multiline: bool, expected: str) -> None:
    assert postprocess(raw, prefix, suffix, multiline=multiline) == expected


BODY = "".join(f"    x{i} = {i}\n" for i in range(30))


@pytest.mark.parametrize(("max_lines", "kept"), [(16, 16), (3, 3), (1, 1), (0, 1), (100, 30)])
def test_max_lines(max_lines: int, kept: int) -> None:
    out = postprocess(BODY[4:], "def f():\n    ", "\n", multiline=True, max_lines=max_lines)
    assert out == "\n".join(BODY[4:].split("\n")[:kept]).rstrip()


TOKENS = st.sampled_from(
    [*"ab :;,=()[]{}\"'`#/*\\\t\n\r", "\r\n", "    ", "do", "end", "//", "/*", "*/", "é", "𝄞"]
)
CODE = st.lists(TOKENS, max_size=40).map("".join) | st.text(max_size=40)


@settings(max_examples=400, deadline=None)
@given(
    raw=CODE,
    prefix=CODE,
    suffix=CODE,
    multiline=st.booleans(),
    max_lines=st.integers(-2, 20),
)
def test_after_fitting_to_the_line_only_removes_text(
    raw: str, prefix: str, suffix: str, multiline: bool, max_lines: int
) -> None:
    out = postprocess(raw, prefix, suffix, multiline=multiline, max_lines=max_lines)
    assert fit_to_line(raw, prefix, suffix).startswith(out)
    assert out == "" or out.strip()
    if multiline:
        assert out.count("\n") < max(1, max_lines)
    else:
        assert "\n" not in out


@settings(max_examples=200, deadline=None)
@given(prefix=CODE, suffix=CODE)
def test_wants_multiline_never_raises(prefix: str, suffix: str) -> None:
    assert wants_multiline(prefix, suffix) in (True, False)


# --- fitting the suggestion to what is typed on the cursor's line --------------------------------

CODE_LINES = st.sampled_from(
    [
        "data = request.json()",
        "return fib(n - 1) + fib(n - 2)",
        "total += item.price",
        "print(größe, naïve)",
        "self.items.append(value)",
        "raise ValueError('bad')",
    ]
)
INDENTS = st.sampled_from(["", "    ", "        ", "\t"])


@given(INDENTS, CODE_LINES, st.data())
def test_a_restarted_line_is_not_typed_twice(indent: str, line: str, data) -> None:
    """The model writes the whole cursor line again (with or without its indentation): only
    what is not typed yet is suggested."""
    whole = indent + line
    typed = data.draw(st.integers(len(indent) + 1, len(whole) - 1))
    if not whole[len(indent) : typed].strip(" ("):
        return  # nothing but a lone bracket typed: a repeat cannot be told from new code
    prefix = f"def f(request):\n{indent}x = 0\n" + whole[:typed]
    for raw in (whole, line):
        assert fit_to_line(raw, prefix, "\n") == whole[typed:]


@given(INDENTS, CODE_LINES)
def test_typed_indentation_is_not_repeated(indent: str, line: str) -> None:
    prefix = f"def f(request):\n{indent}x = 0\n{indent}"
    for raw in (indent + line, line):
        assert fit_to_line(raw, prefix, "\n") == line


def width(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


@given(
    st.sampled_from(["", "    "]),
    st.sampled_from(["", "  ", "    ", "        "]),
    st.sampled_from([0, 1, 2]),
)
def test_a_block_moves_as_one_inside_the_block_it_follows(
    opener_indent: str, model_indent: str, typed_part: int
):
    """After a block opener the first line is inside the block (one step in when nothing is
    typed), and the later lines keep their indentation relative to the first, whatever
    indentation the model wrote."""
    body = opener_indent + "    "
    typed = body[: len(body) * typed_part // 2]
    block = ["if n <= 1:", "    return n", "return fib(n - 1) + fib(n - 2)"]
    raw = "\n".join(model_indent + row for row in block)
    fitted = fit_to_line(raw, f"{opener_indent}def fib(n):\n{typed}", "\n").split("\n")
    first = width(typed + fitted[0])
    assert fitted[0].strip() == block[0]
    assert first > width(opener_indent) and first >= width(typed)
    if not typed:
        assert first >= width(body)
    assert [width(line) - first for line in fitted[1:]] == [4, 0]


@pytest.mark.parametrize("typed", ["", "  ", "    "])
def test_a_block_written_after_the_typed_indentation_stays_where_it_is(typed: str):
    """A model that continues after the typed indentation writes later lines from the line's
    start: they stay put, and the first line is completed to the body's indentation."""
    raw = "    "[len(typed) :] + "if n <= 1:\n        return n\n    return fib(n - 1)"
    fitted = fit_to_line(raw, "def fib(n):\n" + typed, "\n")
    assert typed + fitted == "    if n <= 1:\n        return n\n    return fib(n - 1)"


@given(st.sampled_from(["", "python", "py"]), CODE_LINES, st.sampled_from(["", "\nThat is all."]))
def test_markdown_around_code_is_dropped(language: str, line: str, prose: str) -> None:
    fenced = f"```{language}\n{line}\n```{prose}"
    assert fit_to_line(fenced, "x = 1\n", "") == line
    assert fit_to_line(f"{line}\n```{prose}", "x = 1\n", "") == line
    assert postprocess("```", "def f():\n    return 1\n", "", multiline=False) == ""


@given(st.sampled_from(["größe", "fläche", "data", "naïve_x"]), st.data())
def test_the_word_being_typed_is_not_repeated(word: str, data) -> None:
    typed = data.draw(st.integers(1, len(word) - 1))
    prefix = "print(" + word[:typed]
    assert fit_to_line(word + ")", prefix, "\n") == word[typed:] + ")"
    assert fit_to_line(word[typed:] + ")", prefix, "\n") == word[typed:] + ")"


@pytest.mark.parametrize(
    ("raw", "prefix", "suffix", "multiline", "expected"),
    [
        pytest.param(
            "    if n <= 1:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
            "def fib(n):\n    ",
            "\n",
            True,
            "if n <= 1:\n        return n\n    return fib(n - 1) + fib(n - 2)",
            id="fib-typed-indentation",
        ),
        pytest.param(
            "total += x\n",
            "def f(xs):\n    total = 0\n    for x in xs:\n",
            "\n    return total\n",
            True,
            "        total += x",
            id="column-0-in-loop-body",
        ),
        pytest.param(
            "    data = request.json()\n    return data\n",
            "def view(request):\n    da",
            "",
            False,
            "ta = request.json()",
            id="word-typed-at-end-of-file",
        ),
        pytest.param("```\n", "def f():\n    return 1\n", "", False, "", id="fence-at-end"),
        pytest.param(
            "    return json.dumps(da)",
            "def view(request):\n    da",
            "",
            False,
            "",
            id="new-line-without-its-newline",
        ),
    ],
)
def test_issue_examples_fit_the_line(raw, prefix, suffix, multiline, expected) -> None:
    assert postprocess(raw, prefix, suffix, multiline=multiline) == expected


# --- never re-typing the code after the cursor -----------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    indent=INDENTS,
    target=NAMES,
    args=st.lists(NAMES, min_size=2, max_size=5, unique=True),
    split=st.data(),
    spacing=st.sampled_from([", ", ","]),
    multiline=st.booleans(),
)
def test_a_statement_written_whole_keeps_only_what_its_continuation_lines_lack(
    indent: str, target: str, args: list[str], split, spacing: str, multiline: bool
) -> None:
    """The hidden first line of a multi-line call, answered with the whole call on one line:
    what is accepted plus the continuation lines holds each argument once."""
    first = split.draw(st.integers(1, len(args) - 1))  # arguments on the cursor's line
    head = f"{target} = call({', '.join(args[:first])},"
    rest = [f"{indent}    {arg}," for arg in args[first:-1]] + [f"{indent}    {args[-1]})"]
    prefix = f"def f():\n{indent}x = 0\n{indent}"
    suffix = "\n" + "\n".join(rest) + f"\n{indent}return x\n"
    raw = f"{target} = call({spacing.join(args)})"
    out = postprocess(raw, prefix, suffix, multiline=multiline)
    assert out.replace(" ", "") == head.replace(" ", "")


@settings(max_examples=150, deadline=None)
@given(indent=INDENTS, line=CODE_LINES, other=NAMES, multiline=st.booleans())
def test_a_suggestion_unlike_the_code_after_it_is_kept(
    indent: str, line: str, other: str, multiline: bool
) -> None:
    prefix = f"def f(request):\n{indent}x = 0\n{indent}"
    suffix = f"\n{indent}{other}_9 = 1\n{indent}return x\n"
    assert postprocess(line, prefix, suffix, multiline=multiline) == line


# --- brackets only the suggestion can close ----------------------------------------------------

# Per language: openers as written (a call's arguments, literals), the code around the statement
# (before it, after it, ending the enclosing function where there is one), its indentation, a
# line comment, and a statement that is not the suffix's.
BRACKET_LANGUAGES = {
    "python": ((("f(", ")"), ("[", "]"), ("{", "}")), "", "\nprint(x)\n", ""),
    "javascript": (
        (("f(", ")"), ("[", "]")),
        "function main() {\n",
        "\n  console.log(x);\n}\n",
        "  ",
    ),
    "go": ((("f(", ")"), ("[]T{", "}")), "func main() {\n", "\n\tfmt.Println(x)\n}\n", "\t"),
}
HEADS = {"python": "x = ", "javascript": "const x = ", "go": "x := "}
COMMENTS = {"python": "# ", "javascript": "// ", "go": "// "}
JUNK = {"python": "y = 1", "javascript": "let y = 1;", "go": "y := 1"}
EXTENSIONS = {"python": "py", "javascript": "js", "go": "go"}
# Items hide brackets in strings and comments: they must not count.
ITEMS = st.sampled_from(["a", "bb", "c_1", '"("', '")]"', '"{["', "COMMENT"])


@st.composite
def open_statements(draw):
    """(language, lines of a statement over several lines, the index of each item's line)."""
    language = draw(st.sampled_from(sorted(BRACKET_LANGUAGES)))
    openers, _before, _after, indent = BRACKET_LANGUAGES[language]
    inline = draw(st.booleans())  # closers at the end of the last item's line, or on their own

    def level(depth: int, pad: str) -> list[str]:
        written, closer = draw(st.sampled_from(openers))
        inner = pad + "    "
        rows = [written]
        for _ in range(draw(st.integers(1, 3))):
            if depth < 2 and draw(st.integers(0, 3)) == 0:
                nested = level(depth + 1, inner)
                rows += [inner + nested[0], *nested[1:-1], nested[-1] + ","]
                continue
            item = draw(ITEMS)
            if item == "COMMENT":
                rows.append(inner + COMMENTS[language] + "not closed ( [ {")
                item = "a"
            rows.append(inner + item + ",")
        if inline:
            rows[-1] = rows[-1].removesuffix(",") + closer
        else:
            rows.append(pad + closer)
        return rows

    rows = level(0, indent)
    rows[0] = indent + HEADS[language] + rows[0]
    return language, rows


def _place(language: str, rows: list[str], cut: int) -> tuple[str, str, str, str]:
    """(prefix, hidden text, suffix, junk the model writes after the statement), the cursor
    after the `cut`-th item line's item, before its comma or closer."""
    _openers, before, after, indent = BRACKET_LANGUAGES[language]
    candidates = [i for i, row in enumerate(rows) if i and row.strip() and row.strip()[0] in 'abc"']
    line = candidates[cut % len(candidates)]
    row = rows[line]
    column = len(row.rstrip(",)]}"))
    prefix = before + "\n".join([*rows[:line], row[:column]])
    hidden = "\n".join([row[column:], *rows[line + 1 :]])
    return prefix, hidden, after, indent + JUNK[language]


def _parses(language: str, text: str) -> bool:
    task = Task(Path(f"x.{EXTENSIONS[language]}"), "x", 0, 0, text, "", "", "next-line")
    return accepted_parses(task, "") is True


@settings(max_examples=150, deadline=None)
@given(open_statements(), st.integers(0, 50))
def test_a_suggestion_closes_the_brackets_the_suffix_leaves_open(statement, cut) -> None:
    """Inside brackets the prefix opened (on this or earlier lines) and the suffix does not
    close, the suggestion goes on over lines, whatever their indentation, until they close,
    and ends with the line that closes them: accepted, the file parses. Generation does not
    stop while they are open, and stops once that line is written."""
    language, rows = statement
    prefix, hidden, suffix, junk = _place(language, rows, cut)
    assert _parses(language, prefix + hidden + suffix)  # the generator writes valid code
    assert not _parses(language, prefix + suffix)
    raw = f"{hidden}\n{junk}\n{junk}"
    assert wants_multiline(prefix, suffix)
    out = postprocess(raw, prefix, suffix, multiline=True, max_lines=64)
    assert out == hidden
    assert _parses(language, prefix + out + suffix)
    should_stop = stop_early(prefix, suffix, multiline=True, max_lines=64)
    stops = [n for n in range(1, len(raw) + 1) if should_stop(raw[:n])]
    assert stops[0] == len(hidden) + 1  # just after the closing line's newline


@settings(max_examples=100, deadline=None)
@given(open_statements(), st.integers(0, 50))
def test_brackets_the_suffix_closes_leave_the_line_rules_alone(statement, cut) -> None:
    """The same positions with only the rest of the cursor's line hidden: the suffix closes
    the brackets, so a line inside them is completed on its own line."""
    language, rows = statement
    prefix, hidden, suffix, junk = _place(language, rows, cut)
    rest, newline, later = hidden.partition("\n")
    if not newline or rest != ",":
        return  # the hidden rest of the line closes brackets: the suffix leaves them open
    suffix = f"\n{later}{suffix}"
    assert not wants_multiline(prefix, suffix)
    assert postprocess(f"{rest}\n{junk}", prefix, suffix, multiline=False) == rest


@given(st.sampled_from(sorted(BRACKET_LANGUAGES)), ITEMS.filter(lambda item: item != "COMMENT"))
def test_brackets_in_strings_and_comments_leave_nothing_open(language: str, item: str) -> None:
    _openers, before, after, indent = BRACKET_LANGUAGES[language]
    prefix = (
        f"{before}{indent}{HEADS[language]}f(\n{indent}    {item},\n"
        f"{indent}    {COMMENTS[language]}( [ {{\n{indent})\n{indent}{COMMENTS[language]}("
        f"\n{indent}{HEADS[language].replace('x', 'z')}{item}"
    )
    assert not wants_multiline(prefix, after)


@pytest.mark.parametrize(
    ("raw", "prefix", "suffix", "expected"),
    [
        pytest.param(
            "__all__ +\n           locks.__all__ +\n           tasks.__all__)\n\nx = 1",
            "import x\n\n__all__ = (base_events.",
            "\n\nfrom .base_events import *\n",
            "__all__ +\n           locks.__all__ +\n           tasks.__all__)",
            id="py-tuple-over-lines",
        ),
        pytest.param(
            "b,\n    c,\n):\n    return a\n\n\ndef g():",
            "def f(\n    a,\n    ",
            "\n",
            "b,\n    c,\n):\n    return a",
            id="py-signature-then-its-block",
        ),
        pytest.param(
            "b,\n    () => {\n      done();\n    },\n  );\n  next();",
            "function main() {\n  run(\n    a,\n    ",
            "\n}\n",
            "b,\n    () => {\n      done();\n    },\n  );",
            id="js-call-arguments-with-a-callback",
        ),
        pytest.param(
            "3,\n\t}\n\tfmt.Println(xs)",
            "func main() {\n\txs := []int{\n\t\t1,\n\t\t2,\n\t\t",
            "\n}\n",
            "3,\n\t}",
            id="go-array-literal-in-a-function",
        ),
    ],
)
def test_open_bracket_examples(raw: str, prefix: str, suffix: str, expected: str) -> None:
    assert wants_multiline(prefix, suffix)
    assert postprocess(raw, prefix, suffix, multiline=True) == expected


@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [
        pytest.param("x = f(a,", ")\n", id="closer-after-the-cursor"),
        pytest.param("x = f(\n    a,", "\n)\n", id="closer-on-a-later-line"),
        pytest.param("func main() {\n\tf(a,", "\n\t)\n}\n", id="go-call-closed-below"),
        pytest.param('s = "(', '"\n', id="inside-a-string"),
        pytest.param("x = 1  # (", "\n", id="inside-a-comment"),
        pytest.param('s = """\n(\n"""\nx = 1', "\n", id="after-a-triple-quoted-string"),
    ],
)
def test_no_bracket_left_for_the_suggestion(prefix: str, suffix: str) -> None:
    assert not wants_multiline(prefix, suffix)


def test_the_bracket_scan_reads_a_bounded_tail() -> None:
    """A bracket opened further up than the scanned tail is not seen: the scan costs the
    same on a whole-file prefix."""
    far = "x = f(\n" + "    a,\n" * 4000
    assert not wants_multiline(far + "    b", "\n")
    assert wants_multiline("x = f(\n" + "    a,\n" * 10 + "    b", "\n")


# --- a suggestion the token limit cut ----------------------------------------------------------

BODY_STATEMENTS = st.sampled_from(
    [
        'y = compute(x, "(")',
        "items = [\n    1,\n    (2, 3),\n]",
        '"""Text with ( and [\nover two lines."""',
        "# a comment that leads into code (",
        'if x:\n    return {\n        "a": 1,\n    }',
        "total = f(x,\n          x)",
        "for item in x:\n    y = item  # ]",
        "z = 's(' + \"t{\"",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    first=st.sampled_from(["y = 1", "if x:", "return x"]),
    later=st.lists(BODY_STATEMENTS, min_size=1, max_size=4),
    cut=st.data(),
)
def test_a_suggestion_the_token_limit_cut_ends_where_it_is_finished(
    first: str, later: list[str], cut
) -> None:
    """Cut anywhere after its first line, a multi-line suggestion ends at its last line that
    leaves nothing of its own open and is code: accepted (a block opener gets an empty body,
    as a user types one next), the file parses."""
    body = "        " if first.endswith(":") else "    "  # later lines from the line's start
    statements = [*later, "y = 2"]  # a comment alone is no body
    rows = [first] + [body + row for statement in statements for row in statement.split("\n")]
    raw = "\n".join(rows)
    prefix, suffix = "def f(x):\n    ", "\n\nprint(f(1))\n"
    cut_raw = raw[: cut.draw(st.integers(len(first) + 1, len(raw)))]
    out = postprocess(cut_raw, prefix, suffix, multiline=True, truncated=True)
    assert fit_to_line(cut_raw, prefix, suffix).startswith(out)
    task = Task(Path("x.py"), "x.py", 1, 4, prefix, suffix, raw, "next-line")
    assert accepted_parses(task, out) is True
    assert out.startswith(first)


@pytest.mark.parametrize(
    ("raw", "truncated", "expected"),
    [
        pytest.param(
            'y = 1\n    z = f"{y} and',
            True,
            "y = 1",
            id="unfinished-last-line-dropped",
        ),
        pytest.param('y = 1\n    z = f"{y} and', False, 'y = 1\n    z = f"{y} and', id="not-cut"),
        pytest.param(
            'if x:\n        return 1\n    """Doc\n    text that',
            True,
            "if x:\n        return 1",
            id="open-string-dropped",
        ),
        pytest.param(
            "y = 1\n    # next we\n    z = [\n        1,\n        2",
            True,
            "y = 1",
            id="comment-and-open-bracket-dropped",
        ),
        pytest.param("return {", True, "return {", id="first-line-stays"),
    ],
)
def test_token_limit_examples(raw: str, truncated: bool, expected: str) -> None:
    out = postprocess(raw, "def f(x):\n    ", "\n", multiline=True, truncated=truncated)
    assert out == expected


def test_a_dedent_to_no_open_level_ends_the_suggestion() -> None:
    """The model lost the block: a later line dedents to a width between two open levels."""
    raw = "if x:\n            y = 1\n        z = 2\n    return y"
    assert postprocess(raw, "def f(x):\n    ", "\n", multiline=True) == "if x:\n            y = 1"
    kept = "if x:\n        y = 1\n    z = 2\n    return z"
    assert postprocess(kept, "def f(x):\n    ", "\n", multiline=True) == kept


@pytest.mark.parametrize(("generated", "expected"), [(48, "y = 1"), (47, "y = 1\n    z = f(")])
def test_the_assistant_tells_post_processing_when_the_limit_cut_the_answer(
    generated: int, expected: str
) -> None:
    assistant = Assistant(Settings())  # completion.maxTokens 48; finish needs no model
    try:
        raw = "y = 1\n    z = f("
        assert assistant.finish(raw, "def f(x):\n    ", "\n", generated=generated) == expected
    finally:
        assistant.close()


@settings(max_examples=200, deadline=None)
@given(
    previous=st.sampled_from(
        ["import sys", "x = compute(1, 2)", "return total", "if ready:", "class Shape:", "}"]
    ),
    previous_indent=INDENTS,
    typed=st.sampled_from(["", "    "]),
    model_indent=st.sampled_from(["", "    ", "        ", "            "]),
    line=CODE_LINES,
    comment=st.booleans(),
)
def test_the_first_line_is_never_deeper_than_the_line_before_allows(
    previous: str, previous_indent: str, typed: str, model_indent: str, line: str, comment: bool
) -> None:
    """On a line holding only indentation, the first line goes at most one step inside a
    block the line before opens, else no deeper than that line (or what is typed): deeper is
    an unexpected indent. Whole-line comments in between do not count."""
    between = "# a note at the margin\n" if comment else ""
    prefix = f"{previous_indent}{previous}\n\n{between}{typed}"
    fitted = fit_to_line(model_indent + line, prefix, "\n")
    deepest = width(previous_indent) + (4 if previous.endswith(":") else 0)
    assert fitted.strip() == line
    assert width(typed + fitted) <= max(width(typed), deepest)


@pytest.mark.parametrize(
    "prefix",
    ["total = compute(\n    1,\n", "items = [\n", "x = 1 + \\\n", 'doc = """\n'],
)
def test_inside_an_open_bracket_any_indentation_goes(prefix: str) -> None:
    assert fit_to_line("            2)", prefix, "\n") == "            2)"


def _python_brackets(line: str) -> list[str] | None:
    """The brackets Python's own tokenizer finds in `line`; None when it is no whole line of
    Python tokens (an unclosed string, a stray backslash)."""
    try:
        found = list(tokenize.generate_tokens(io.StringIO(line + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    if any(t.type == tokenize.ERRORTOKEN for t in found):
        return None
    return [t.string for t in found if t.type == tokenize.OP and t.string in "()[]{}"]


# Pieces of a line: brackets, quotes, strings holding brackets (triple-quoted, over lines too).
_PIECES = ["a", " ", "(", ")", "[", "]", "{", "}", '"', "'", "#", "\\", '"(]"', "'[)'"]
_PIECES += ['"""a(\n"""', "'''"]


@given(st.lists(st.sampled_from(_PIECES), max_size=14).map("".join))
@settings(max_examples=400)
def test_the_lexer_finds_the_brackets_python_finds(line: str) -> None:
    # One lexer serves every language: '#' starts a comment only after a space or at the
    # line start (C's #include, JS's #private), so lines with '#' after code are not compared.
    expected = _python_brackets(line)
    if expected is None or re.search(r"\S#", line):
        return
    assert [ch for _at, ch in _lex(line).brackets] == expected
    assert not _lex(line).inside or "#" in line


@pytest.mark.parametrize(
    ("line", "opened", "inside"),
    [
        ('x = """(', '"""', True),
        ('x = """a" (', '"""', True),  # one quote does not close three
        ('x = """a""" (', "", False),
        ("x = f(  # note (", "#", True),
        ("s = 'it''s' + (", "", False),
        ("s = 'don\\'t (", "'", True),
    ],
)
def test_the_lexer_says_what_a_line_ends_inside(line: str, opened: str, inside: bool) -> None:
    lexed = _lex(line)
    assert (lexed.open, lexed.inside) == (opened, inside)
    if opened:
        assert line[lexed.open_at :].startswith(opened)


def test_a_line_that_starts_inside_a_string_counts_brackets_only_after_it_ends() -> None:
    assert _balance('end of text""" + f(x', '"""') == (["("], [])
    assert _balance("a ( b ) c", "#") == ([], [])
    assert _balance("x) + y]", "") == ([], [")", "]"])
