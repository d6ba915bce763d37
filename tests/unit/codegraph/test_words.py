"""Identifier boundaries by Unicode's rules, in every language the CodeGraph knows."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeagent_lsp.codegraph import extract
from codeagent_lsp.codegraph.words import IDENTIFIER, word_at, word_start

# (language, source declaring a non-ASCII name, the name)
DECLARATIONS = [
    ("python", "def größe(x):\n    return x\n", "größe"),
    ("javascript", "function $fläche(a) { return a; }\n", "$fläche"),
    ("typescript", "function naïve(a: number) { return a; }\n", "naïve"),
    ("go", "package main\nfunc Größe() int { return 1 }\n", "Größe"),
    ("rust", "fn größe() -> i32 { 1 }\n", "größe"),
    ("java", "class A { int größe() { return 1; } }\n", "größe"),
    ("c", "int größe(void) { return 1; }\n", "größe"),
    ("cpp", "int größe() { return 1; }\n", "größe"),
]


@pytest.mark.parametrize(("language", "source", "name"), DECLARATIONS)
def test_the_word_at_a_name_is_the_name_the_parser_sees(language: str, source: str, name: str):
    facts = extract.extract(source.encode("utf-8"), language)
    assert name in {d.name for d in facts.definitions}
    start = source.index(name)
    for offset in range(start, start + len(name) + 1):
        assert word_at(source, offset) == name
    assert IDENTIFIER.search(source[start:]).group() == name


identifier_chars = st.characters(
    categories=["Lu", "Ll", "Lo", "Lm", "Mn", "Nd", "Pc"], exclude_characters="\u0345"
)
identifiers = st.text(identifier_chars, min_size=1, max_size=8).filter(
    lambda s: s.isidentifier() and s == unicodedata.normalize("NFC", s)
)


@given(identifiers, st.sampled_from(["print(", "x = ", "a.", " ", "{", "", "-"]))
def test_the_word_before_the_cursor_is_the_whole_identifier(name: str, before: str):
    text = before + name
    assert word_start(text, len(text)) == len(before)
    assert word_at(text, len(text)) == name


def test_digits_start_no_word_and_dollar_joins_one():
    assert word_start("x = 12", 6) == 6
    assert word_at("a = $el2", 8) == "$el2"
    assert word_at("(fläc", 5) == "fläc"
    assert word_at("e\u0301t\u00e9 ", 2) == "e\u0301t\u00e9"  # a combining accent
