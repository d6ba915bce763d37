"""Prompt context: token budgets around the cursor (budget.fit) and FIM templates."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from codeagent_lsp.context.budget import PREFIX_FILL, CountTokens, Excerpt, Window, fit
from codeagent_lsp.context.templates import (
    TEMPLATES,
    FimTemplate,
    TemplateError,
    detect_template,
)
from codeagent_lsp.engine.backend import Special
from codeagent_lsp.engine.llama import LlamaRuntime
from codeagent_lsp.settings import EngineSettings

CODE = "\n".join(
    [
        "import os",
        "import sys",
        "",
        "",
        "class Node:",
        "    def __init__(self, name: str, value: int = 0) -> None:",
        "        self.name = name",
        "        self.value = value",
        "        self.children = []",
        "",
        "    def add(self, child):",
        "        self.children.append(child)",
        "        return child",
        "",
        "    def find(self, name):",
        "        if self.name == name:",
        "            return self",
        "        for child in self.children:",
        "            found = child.find(name)",
        "            if found is not None:",
        "                return found",
        "        return None",
        "",
        "",
        "def fibonacci(n: int) -> int:",
        "    if n < 2:",
        "        return n",
        "    return fibonacci(n - 1) + fibonacci(n - 2)",
        "",
        "",
        "def main() -> int:",
        "    for name in os.listdir(os.getcwd()):",
        "        print(name)",
        "    return 0",
        "",
    ]
)


def count_chars(text: str) -> int:
    return len(text)


def count_words(text: str) -> int:
    """Words, punctuation marks and newlines: a crude tokenizer that is not additive in
    characters (adding a letter to a word adds no token)."""
    return len(re.findall(r"\w+|[^\w\s]|\n", text))


def count_blank_heavy(text: str) -> int:
    """Characters, and 10 more per blank line: counting line by line underestimates it (as a
    tokenizer's per-line counts can), so `fit` must check the joined text."""
    return len(text) + 10 * text.count("\n\n")


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[LlamaRuntime]:
    rt = LlamaRuntime(tiny_model, EngineSettings(threads=1, contextSize=256), n_seqs=1)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def count_tokens(runtime: LlamaRuntime) -> CountTokens:
    return lambda text: len(runtime.tokenize(text))


def check_excerpt(
    text: str,
    offset: int,
    prefix_budget: int,
    suffix_budget: int,
    count: CountTokens,
    excerpt: Excerpt,
) -> None:
    """What every excerpt satisfies, whatever the window it started from."""
    before, after = text[:offset], text[offset:]
    cursor_line = before.count("\n")
    prefix, suffix = excerpt.prefix, excerpt.suffix
    assert count(prefix) <= prefix_budget
    assert count(suffix) <= suffix_budget
    assert before.endswith(prefix)
    assert after.startswith(suffix)

    start = offset - len(prefix)
    cursor_line_text = before.rsplit("\n", 1)[-1]
    if start == 0 or text[start - 1] == "\n":  # cut at a line start
        assert excerpt.window.start_line == text[:start].count("\n")
    else:  # only when the cursor line alone is over budget: cut inside it
        assert count(cursor_line_text) > prefix_budget
        assert "\n" not in prefix
        assert excerpt.window.start_line == cursor_line

    end = offset + len(suffix)
    # Cut at a line end; empty when even the rest of the cursor line is over budget.
    assert end == len(text) or text[end] == "\n" or suffix == ""
    kept_lines = excerpt.window.end_line - cursor_line
    if suffix:
        assert kept_lines == suffix.count("\n") + 1
    else:
        assert kept_lines in (0, 1)
    assert excerpt.window.lines_below == text.count("\n") + 1 - excerpt.window.end_line


# --- budget.fit: exact budgets, line cuts -------------------------------------------------------


lines = st.lists(st.just("") | st.text(alphabet="ab (:_\t", max_size=30), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(
    text=lines.map("\n".join),
    where=st.floats(min_value=0, max_value=1),
    prefix_budget=st.integers(min_value=0, max_value=80),
    suffix_budget=st.integers(min_value=0, max_value=50),
    counter=st.sampled_from([count_chars, count_words, count_blank_heavy]),
    previous=st.none() | st.builds(Window, *[st.integers(0, 30)] * 3),
)
@example(
    text="a" * 50, where=1.0, prefix_budget=10, suffix_budget=0, counter=count_chars, previous=None
)
@example(
    text="\n" * 12 + "a" + "\n" * 12,
    where=0.5,
    prefix_budget=40,
    suffix_budget=40,
    counter=count_blank_heavy,
    previous=None,
)
def test_fit_respects_budgets_and_cuts_at_lines(
    text: str,
    where: float,
    prefix_budget: int,
    suffix_budget: int,
    counter: CountTokens,
    previous: Window | None,
) -> None:
    offset = round(where * len(text))
    excerpt = fit(text, offset, prefix_budget, suffix_budget, counter, previous)
    check_excerpt(text, offset, prefix_budget, suffix_budget, counter, excerpt)

    if previous is None:  # text that fits comfortably is kept whole
        before, after = text[:offset], text[offset:]
        if counter(before) + 1 <= int(prefix_budget * PREFIX_FILL):
            assert excerpt.prefix == before
        if counter(after) + 1 <= int(suffix_budget * 0.9):
            assert excerpt.suffix == after


@pytest.mark.parametrize(
    ("prefix_budget", "suffix_budget"), [(16, 0), (40, 12), (100, 40), (400, 100), (2000, 2000)]
)
def test_fit_with_the_real_tokenizer(
    count_tokens: CountTokens, prefix_budget: int, suffix_budget: int
) -> None:
    for offset in range(0, len(CODE) + 1, 37):
        excerpt = fit(CODE, offset, prefix_budget, suffix_budget, count_tokens)
        check_excerpt(CODE, offset, prefix_budget, suffix_budget, count_tokens, excerpt)
        if prefix_budget == 2000:
            assert (excerpt.prefix, excerpt.suffix) == (CODE[:offset], CODE[offset:])


def test_long_cursor_line_is_cut_inside_to_the_token(count_tokens: CountTokens) -> None:
    line = "    total = " + " + ".join(f"value_{i}" for i in range(60))
    text = CODE + line
    excerpt = fit(text, len(text), 50, 20, count_tokens)
    assert count_tokens(excerpt.prefix) <= 50
    assert line.endswith(excerpt.prefix) and len(excerpt.prefix) < len(line)
    # The longest end of the line within the budget: one more character would not fit.
    assert count_tokens(line[-len(excerpt.prefix) - 1 :]) > 50
    assert excerpt.window.start_line == text.count("\n")


# --- budget.fit: the sticky window --------------------------------------------------------------


def type_at_cursor(
    text: str, offset: int, typed: str, budgets: tuple[int, int], count: CountTokens
) -> list[tuple[str, int, Excerpt]]:
    """Type `typed` one character at a time at `offset`, fitting after each keystroke with the
    previous window; returns (text, offset, excerpt) per keystroke, the first before typing."""
    excerpt = fit(text, offset, *budgets, count)
    steps = [(text, offset, excerpt)]
    for char in typed:
        text, offset = text[:offset] + char + text[offset:], offset + 1
        excerpt = fit(text, offset, *budgets, count, excerpt.window)
        steps.append((text, offset, excerpt))
    return steps


TYPED = "".join(f"    result_{i} = compute(first, second) + {i}\n" for i in range(12))
"""New code typed line after line in the middle of a function."""


@pytest.mark.parametrize("counter", ["chars", "words", "tokens"])
def test_window_is_sticky_while_typing(counter: str, count_tokens: CountTokens) -> None:
    count = {"chars": count_chars, "words": count_words, "tokens": count_tokens}[counter]
    budget, suffix_budget = {"chars": (300, 150), "words": (80, 40), "tokens": (80, 40)}[counter]
    # Exact for the additive counters; the tokenizer may merge tokens across line ends.
    slack = 4 if counter == "tokens" else 0
    offset = CODE.index("    return fibonacci(")
    steps = type_at_cursor(CODE, offset, TYPED, (budget, suffix_budget), count)
    first = steps[0][2]
    assert first.suffix.count("\n") > 2  # several lines of suffix to keep

    recuts = 0
    for (_, _, before), (text, now_offset, after) in itertools.pairwise(steps):
        check_excerpt(text, now_offset, budget, suffix_budget, count, after)
        # Typing at the cursor, new lines included, leaves the suffix as it was.
        assert after.suffix == first.suffix
        assert after.window.lines_below == first.window.lines_below
        old_start = before.window.start_line
        kept = "\n".join(text[:now_offset].split("\n")[old_start:])
        if count(kept) <= budget:
            assert after.window.start_line == old_start, "re-cut although the prefix fit"
            assert after.prefix == kept
        else:
            recuts += 1
            assert after.window.start_line > old_start
            # The new cut leaves a quarter of the budget for the typing to come.
            assert count(after.prefix) <= budget - budget // 4 + slack
    assert recuts >= 2  # the typing went past the budget more than once
    # Between re-cuts the window held for many keystrokes.
    starts = [e.window.start_line for _, _, e in steps]
    assert len(set(starts)) == recuts + 1
    assert len(steps) / (recuts + 1) > 20


def test_window_is_recut_when_the_cursor_leaves_it(count_tokens: CountTokens) -> None:
    bottom = fit(CODE, len(CODE), 60, 20, count_tokens)
    assert bottom.window.start_line > 0
    # The cursor moves above the window's start: the prefix is cut afresh.
    offset = CODE.index("class Node")
    up = fit(CODE, offset, 60, 20, count_tokens, bottom.window)
    assert up.window.start_line <= CODE[:offset].count("\n")
    check_excerpt(CODE, offset, 60, 20, count_tokens, up)
    # Then below the suffix's end: the suffix is cut afresh.
    offset = CODE.index("def main")
    assert CODE[:offset].count("\n") >= up.window.end_line
    down = fit(CODE, offset, 60, 20, count_tokens, up.window)
    check_excerpt(CODE, offset, 60, 20, count_tokens, down)
    assert down.suffix == fit(CODE, offset, 60, 20, count_tokens).suffix != ""


# --- templates ----------------------------------------------------------------------------------


def vocabulary(*families: str) -> set[str]:
    return {t for family in families for t in TEMPLATES[family].control_tokens()}


@pytest.mark.parametrize("family", list(TEMPLATES))
def test_detect_template_from_the_vocabulary(family: str) -> None:
    tokens = vocabulary(family) | {"<|endoftext|>", "<s>"}
    assert detect_template("auto", tokens.__contains__).family == family


def test_detect_template_needs_every_control_token() -> None:
    # Qwen's FIM tokens without its repository tokens are not Qwen's layout.
    qwen = vocabulary("qwen2.5-coder") - {"<|repo_name|>"}
    with pytest.raises(TemplateError):
        detect_template("auto", qwen.__contains__)
    # Every family's tokens at once: the first (most specific) family wins.
    assert detect_template("auto", vocabulary(*TEMPLATES).__contains__).family == "qwen2.5-coder"


def test_detect_template_on_the_tiny_models_vocabulary(runtime: LlamaRuntime) -> None:
    template = detect_template("auto", lambda t: runtime.token_id(t) is not None)
    assert template.family == "qwen2.5-coder"
    assert all(runtime.token_id(t) is not None for t in template.stop_tokens)


def test_setting_and_registry_family_override_the_vocabulary() -> None:
    qwen = vocabulary("qwen2.5-coder").__contains__
    assert detect_template("starcoder2", qwen).family == "starcoder2"
    assert detect_template("auto", qwen, "deepseek-coder").family == "deepseek-coder"
    assert detect_template("", qwen, "codestral").family == "codestral"
    # The setting beats the registry.
    assert detect_template("codellama", qwen, "deepseek-coder").family == "codellama"
    # Neither: the vocabulary decides.
    assert detect_template("auto", qwen, None).family == "qwen2.5-coder"


@pytest.mark.parametrize(("setting", "registry"), [("gpt-fim", None), ("auto", "gpt-fim")])
def test_unknown_template_name_is_an_error(setting: str, registry: str | None) -> None:
    with pytest.raises(TemplateError, match=r"unknown FIM template 'gpt-fim'; known: .*starcoder2"):
        detect_template(setting, vocabulary(*TEMPLATES).__contains__, registry)


def test_vocabulary_without_fim_tokens_is_an_error() -> None:
    with pytest.raises(TemplateError) as error:
        detect_template("auto", {"<s>", "</s>", "<|endoftext|>"}.__contains__)
    message = str(error.value)
    assert "no fill-in-the-middle tokens" in message
    assert "codeagent.completion.template" in message
    assert all(family in message for family in TEMPLATES)


def test_qwen_build_is_psm_with_a_repository_header() -> None:
    qwen = TEMPLATES["qwen2.5-coder"]
    segments = qwen.build(
        "def f():\n    ",
        "\n\nprint(f())\n",
        path="src/app.py",
        repo="demo",
        context_files=[("src/util.py", "X = 1")],
    )
    assert segments == [
        Special("<|repo_name|>"), "demo\n",
        Special("<|file_sep|>"), "src/util.py\nX = 1\n",
        Special("<|file_sep|>"), "src/app.py\n",
        Special("<|fim_prefix|>"), "def f():\n    ",
        Special("<|fim_suffix|>"), "\n\nprint(f())\n",
        Special("<|fim_middle|>"),
    ]  # fmt: skip


def test_empty_text_segments_are_dropped() -> None:
    qwen = TEMPLATES["qwen2.5-coder"]
    assert qwen.build("", "") == [
        Special("<|repo_name|>"), "workspace\n",
        Special("<|fim_prefix|>"), Special("<|fim_suffix|>"), Special("<|fim_middle|>"),
    ]  # fmt: skip
    deepseek = TEMPLATES["deepseek-coder"]  # its tokens have fullwidth bars: not spelled here
    assert deepseek.middle_token is not None
    assert deepseek.build("a = ", "") == [
        Special(deepseek.prefix_token), "a = ", Special(deepseek.suffix_token),
        Special(deepseek.middle_token),
    ]  # fmt: skip
    assert all(s != "" for t in TEMPLATES.values() for s in t.build("", "", path="a.py"))


def test_codestral_build_is_spm_without_a_middle_token() -> None:
    codestral = TEMPLATES["codestral"]
    segments = codestral.build("def f():\n    ", "\nprint(1)\n", path="a.py")
    assert segments == [Special("[SUFFIX]"), "\nprint(1)\n", Special("[PREFIX]"), "def f():\n    "]
    # The cursor is at the very end of an SPM prompt: the prefix text comes last.
    assert segments[-1] == "def f():\n    "


def test_codellama_text_gets_its_leading_space() -> None:
    codellama = TEMPLATES["codellama"]
    assert codellama.build("def f():", "return 1") == [
        Special("▁<PRE>"), " def f():", Special("▁<SUF>"), " return 1", Special("▁<MID>"),
    ]  # fmt: skip


def test_families_without_a_file_layout_get_context_as_comments() -> None:
    for template in (TEMPLATES["deepseek-coder"], TEMPLATES["codestral"]):
        segments = template.build("p", "s", path="a.py", context_files=[("lib/b.py", "B = 2")])
        assert segments[0] == "# Path: lib/b.py\nB = 2\n\n"
        assert segments[1] == Special(
            template.suffix_token if template.suffix_first else template.prefix_token
        )


def test_every_template_names_its_tokens() -> None:
    for template in TEMPLATES.values():
        assert isinstance(template, FimTemplate)
        tokens = template.control_tokens()
        assert template.prefix_token in tokens and template.suffix_token in tokens
        assert len(set(tokens)) == len(tokens)
