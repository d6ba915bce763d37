"""The quality benchmark's pieces: metrics, seeded sampling of masked lines, aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeagent_lsp.bench.quality import (
    MID_LINE,
    NEXT_LINE,
    Condition,
    Task,
    accepted_parses,
    edit_similarity,
    exact_match,
    identifier_match,
    identifiers,
    levenshtein,
    run_quality_bench,
    sample_tasks,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "projects" / "python"
STDLIB_JSON = Path(json.__file__).resolve().parent
ROOTS = [FIXTURE, STDLIB_JSON]


# --- metrics ----------------------------------------------------------------------------------


def test_identical_lines_score_full_marks() -> None:
    line = "return self.radius * 2"
    assert exact_match(line, line)
    assert edit_similarity(line, line) == 100.0
    assert identifier_match(line, line) == 100.0


def test_surrounding_whitespace_is_ignored_but_inner_spacing_counts() -> None:
    assert exact_match("  x = 1  ", "x = 1")
    assert edit_similarity("\tx = 1 ", "x = 1") == 100.0
    assert not exact_match("x=1", "x = 1")
    assert edit_similarity("x=1", "x = 1") == pytest.approx(60.0)


def test_empty_prediction_scores_zero() -> None:
    assert not exact_match("", "total += 1")
    assert edit_similarity("", "total += 1") == 0.0
    assert identifier_match("", "total += 1") == 0.0


def test_two_empty_lines_match() -> None:
    assert exact_match("", "  ")
    assert edit_similarity("", "") == 100.0
    assert identifier_match("()", "( )") == 100.0


def test_only_the_first_line_of_a_prediction_is_scored() -> None:
    prediction = "value = compute(x)\nprint(value)\nreturn value"
    assert exact_match(prediction, "value = compute(x)")
    assert edit_similarity(prediction, "value = compute(x)") == 100.0
    assert identifier_match(prediction, "value = compute(x)\nother") == 100.0


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("abc", "", 3),
        ("", "abc", 3),
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("same", "same", 0),
    ],
)
def test_levenshtein_known_values(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance


@given(st.text(max_size=30), st.text(max_size=30))
def test_levenshtein_is_a_bounded_symmetric_distance(a: str, b: str) -> None:
    distance = levenshtein(a, b)
    assert distance == levenshtein(b, a)
    assert abs(len(a) - len(b)) <= distance <= max(len(a), len(b))
    assert (distance == 0) == (a == b)


def test_edit_similarity_is_one_minus_normalised_distance() -> None:
    # kitten -> sitting: 3 edits over 7 characters.
    assert edit_similarity("kitten", "sitting") == pytest.approx(100 * (1 - 3 / 7))


def test_identifiers_skip_keywords_numbers_and_punctuation() -> None:
    assert identifiers("for item in items[0]: yield item.name") == [
        "item",
        "items",
        "item",
        "name",
    ]


def test_identifier_match_is_f1_over_identifier_multisets() -> None:
    # Predicted {a, b}, expected {a, c, d}: precision 1/2, recall 1/3, F1 = 2/5.
    assert identifier_match("a + b", "a + c + d") == pytest.approx(40.0)
    assert identifier_match("a(b)", "b(a)") == 100.0  # order does not count, EM does
    assert not exact_match("a(b)", "b(a)")


# --- sampling ---------------------------------------------------------------------------------


def _original(task: Task) -> str:
    return task.path.read_text(encoding="utf-8")


@pytest.mark.parametrize("root", ROOTS, ids=["fixture", "stdlib-json"])
def test_sampling_is_deterministic_for_a_seed(root: Path) -> None:
    first = sample_tasks(root, 12, seed=7)
    assert first
    assert first == sample_tasks(root, 12, seed=7)


def test_sampling_differs_across_seeds() -> None:
    def positions(seed: int) -> list[tuple[str, int, int]]:
        return [(t.relative, t.line, t.column) for t in sample_tasks(STDLIB_JSON, 12, seed)]

    assert positions(1) != positions(2)


@pytest.mark.parametrize("root", ROOTS, ids=["fixture", "stdlib-json"])
def test_masked_text_splits_the_original_at_the_cursor(root: Path) -> None:
    for task in sample_tasks(root, 30, seed=3):
        original = _original(task)
        assert task.prefix_text + task.expected + task.suffix_text == original
        line = original.split("\n")[task.line]
        assert task.prefix_text.endswith(line[: task.column])
        assert task.expected == line[task.column :]
        assert task.suffix_text == "" or task.suffix_text.startswith("\n")
        # The masked document holds the line's start only: the hidden rest is gone from it.
        masked_lines = (task.prefix_text + task.suffix_text).split("\n")
        assert masked_lines[task.line] == line[: task.column]


@pytest.mark.parametrize("root", ROOTS, ids=["fixture", "stdlib-json"])
def test_kinds_are_balanced_and_well_formed(root: Path) -> None:
    tasks = sample_tasks(root, 20, seed=5)
    kinds = [t.kind for t in tasks]
    assert abs(kinds.count(NEXT_LINE) - kinds.count(MID_LINE)) <= 1
    for task in tasks:
        line = task.prefix_text.split("\n")[-1]
        if task.kind == NEXT_LINE:
            assert line.strip() == ""  # only the indentation is given
            assert task.expected == task.expected.lstrip()
        else:
            assert line.strip()  # some of the line is given
        assert len(task.expected.strip()) >= 2


@pytest.mark.parametrize("root", ROOTS, ids=["fixture", "stdlib-json"])
def test_sampled_lines_are_code(root: Path) -> None:
    for task in sample_tasks(root, 40, seed=11):
        line = (task.prefix_text.split("\n")[-1] + task.expected).strip()
        assert len(line) >= 8
        assert len(line) <= 160
        assert not line.startswith(("#", '"""', "'''"))
        assert "tests/" not in task.relative


def test_docstring_lines_are_never_sampled() -> None:
    geometry = FIXTURE / "shapes" / "geometry.py"
    lines = geometry.read_text(encoding="utf-8").split("\n")
    prose = {
        number
        for number, line in enumerate(lines)
        if line.strip() in {"Zero for an abstract shape.", '"""Area of a w by h rectangle."""'}
    }
    assert len(prose) == 2
    for seed in range(20):
        sampled = {t.line for t in sample_tasks(FIXTURE, 20, seed) if t.path == geometry}
        assert not sampled & prose


def test_sampling_skips_tests_short_files_and_spreads(tmp_path: Path) -> None:
    body = "".join(f"value_{i} = compute({i}, factor)\n" for i in range(30))
    for name in ("a.py", "b.py", "c.py", "d.py", "tests/test_a.py", "pkg/__pycache__/x.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    (tmp_path / "short.py").write_text("value_1 = compute(1, factor)\n", encoding="utf-8")
    tasks = sample_tasks(tmp_path, 12, seed=0)
    assert len(tasks) == 12
    files = [t.relative for t in tasks]
    assert sorted(set(files)) == ["a.py", "b.py", "c.py", "d.py"]
    assert max(files.count(f) for f in set(files)) <= 3


def test_sampling_an_empty_folder_gives_nothing(tmp_path: Path) -> None:
    assert sample_tasks(tmp_path, 10, seed=0) == []


# --- running and aggregating ------------------------------------------------------------------


def _task(expected: str, kind: str, uses_other_file: bool = False) -> Task:
    return Task(
        path=Path("m.py"),
        relative="m.py",
        line=0,
        column=0,
        prefix_text="",
        suffix_text="",
        expected=expected,
        kind=kind,
        uses_other_file=uses_other_file,
    )


async def test_run_quality_bench_aggregates_per_condition_kind_and_other_file() -> None:
    tasks = [
        _task("alpha = 1", NEXT_LINE),
        _task("beta(2)", MID_LINE, uses_other_file=True),
    ]
    calls: list[tuple[str, str]] = []

    async def none(task: Task) -> tuple[str, float]:
        calls.append(("none", task.expected))
        return "", 10.0

    async def windows(task: Task) -> tuple[str, float]:
        calls.append(("windows", task.expected))
        return ("alpha = 1", 20.0) if task.kind == NEXT_LINE else ("gamma(2)", 30.0)

    async def full(task: Task) -> tuple[str, float]:
        calls.append(("full", task.expected))
        return task.expected + "\nextra line", 40.0

    messages: list[str] = []
    result = await run_quality_bench(
        tasks, {"none": none, "windows": windows, "full": full}, progress=messages.append
    )

    assert len(calls) == 6 and len(messages) == 2
    assert result["samples"] == 2
    assert result["conditions"] == ["none", "windows", "full"]
    assert (result["em_none"], result["em_windows"], result["em_full"]) == (0.0, 50.0, 100.0)
    assert (result["es_none"], result["es_full"]) == (0.0, 100.0)
    # gamma(2) against beta(2): 4 edits over 8 characters.
    assert result["es_windows"] == pytest.approx((100 + 50) / 2)
    assert (result["id_none"], result["id_windows"], result["id_full"]) == (0.0, 50.0, 100.0)
    assert result["p50_ms"] == 25.0
    assert (result["p50_ms_none"], result["p50_ms_windows"], result["p50_ms_full"]) == (
        10.0,
        25.0,
        40.0,
    )
    per_kind = result["per_kind"]
    assert per_kind[NEXT_LINE]["samples"] == 1 and per_kind[MID_LINE]["samples"] == 1
    assert per_kind[NEXT_LINE]["em_windows"] == 100.0
    assert per_kind[MID_LINE]["em_windows"] == 0.0
    assert result["other_file"]["samples"] == 1
    assert result["other_file"]["es_windows"] == pytest.approx(50.0)
    table = result["table"].splitlines()
    assert table[0] == "| condition | EM | ES | ID | parses % | p50 ms |"
    assert table[2:] == [
        "| none | 0.0 | 0.0 | 0.0 | 100.0 | 10 |",
        "| windows | 50.0 | 75.0 | 50.0 | 100.0 | 25 |",
        "| full | 100.0 | 100.0 | 100.0 | 0.0 | 40 |",  # "extra line" is no Python
    ]
    assert result["parse_rate"] == pytest.approx(200 / 3, abs=0.01)
    assert result["parse_samples"] == 2
    assert "per_task" not in result


async def test_run_quality_bench_rotates_condition_order_and_keeps_predictions() -> None:
    order: list[str] = []

    def condition(name: str) -> Condition:
        async def complete(task: Task) -> tuple[str, float]:
            order.append(name)
            return name, 1.0

        return complete

    tasks = [_task("x = 1", NEXT_LINE), _task("y = 2", MID_LINE)]
    result = await run_quality_bench(
        tasks, {"a": condition("a"), "b": condition("b")}, keep_predictions=True
    )
    assert order == ["a", "b", "b", "a"]
    assert result["em_a"] == 0.0 and "em_none" not in result
    rows = result["per_task"]
    assert len(rows) == 4
    assert {row["condition"] for row in rows} == {"a", "b"}
    assert rows[0]["prediction"] == "a" and rows[0]["expected"] == "x = 1"


async def test_run_quality_bench_with_no_tasks() -> None:
    async def none(task: Task) -> tuple[str, float]:
        return "", 0.0

    result = await run_quality_bench([], {"none": none})
    assert result["samples"] == 0 and result["em_none"] == 0.0 and result["p50_ms"] == 0.0
    assert result["other_file"]["samples"] == 0


# --- accept and parse -------------------------------------------------------------------------


def _masked(name: str, prefix: str, expected: str, suffix: str) -> Task:
    return Task(Path(name), name, 0, 0, prefix, suffix, expected, NEXT_LINE)


PY = _masked("m.py", "def f(x):\n    y = x\n    ", "return y", "\n\n\ndef g():\n    return 2\n")
JS = _masked("m.js", "function f(x) {\n  ", "return x;", "\n}\nf(1);\n")


@pytest.mark.parametrize(
    ("task", "prediction", "parses"),
    [
        (PY, "return y", True),
        (PY, "    return y", False),  # the typed indentation repeated
        (PY, "if y:", True),  # opens a block: given `pass`
        (PY, "return (", True),  # given its closing bracket
        (PY, "return y\n```", False),
        (JS, "return x;", True),
        (JS, "return x; }", False),  # one brace too many: an ERROR node
        (JS, "if (x) {", True),  # given its closing brace
        (JS, "return x +", False),
        (_masked("m.py", "def f(:\n    ", "pass", "\n"), "pass", None),  # never parsed
        (_masked("notes.txt", "a\n", "b", "\n"), "b", None),  # no parser for it
    ],
)
def test_accepting_the_whole_suggestion_leaves_the_file_parsing(task, prediction, parses):
    assert accepted_parses(task, prediction) is parses
