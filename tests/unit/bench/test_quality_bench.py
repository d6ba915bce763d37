"""The quality benchmark's pieces: metrics, seeded sampling of masked lines, aggregation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeagent_lsp.bench.quality import (
    MID_LINE,
    NEXT_LINE,
    REACHES,
    Completion,
    Condition,
    Prepared,
    Task,
    accepted_parses,
    edit_similarity,
    exact_match,
    hidden_span,
    identifier_match,
    identifiers,
    levenshtein,
    reach,
    run_quality_bench,
    sample_tasks,
    sign_test,
)
from codeagent_lsp.bench.results import Result, ResultsFile
from tests.conftest import PROJECTS

FIXTURE = PROJECTS / "python"
STDLIB_JSON = Path(json.__file__).resolve().parent
CLI = [sys.executable, "-m", "codeagent_lsp"]
ROOTS = [FIXTURE, STDLIB_JSON]


# --- metrics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wins", "losses", "p"),
    [(0, 0, 1.0), (5, 5, 1.0), (10, 0, 2 / 1024), (0, 10, 2 / 1024), (8, 2, 112 / 1024)],
)
def test_sign_test_known_values(wins: int, losses: int, p: float) -> None:
    # 8 of 10: P(X <= 2) = (1 + 10 + 45) / 1024, doubled.
    assert sign_test(wins, losses) == pytest.approx(p)


@given(st.integers(0, 60), st.integers(0, 60))
def test_sign_test_is_symmetric_and_falls_as_the_split_grows(wins: int, losses: int) -> None:
    assert 0 < sign_test(wins, losses) == sign_test(losses, wins) <= 1
    if wins >= losses:
        assert sign_test(wins + 1, losses) <= sign_test(wins, losses)


DOCUMENT = "import os\n\ndef helper(path):\n    return os.path.join(path, SUFFIX)\n"
WINDOW = "def helper(path):\n    return os.path.join(path, SUFFIX)\n"


@pytest.mark.parametrize(
    ("expected", "where"),
    [
        ("helper(path)", "window"),
        ("len(path) + SUFFIX", "window"),  # builtins are always in sight
        ("if path is None: return", "window"),  # keywords too
        ("os.path.join(path)", "window"),
        ("os.getcwd()", "unseen"),  # every name counts: a library's attribute is unseen
        ("import os", "window"),
        ("helpers = os", "repository"),  # `helpers` is not `helper`: defined in another file
        ("LIMIT = 3", "repository"),
        ("import os  # helper(LIMIT)", "repository"),  # comments are words too
        ("x = helper_two(path)", "unseen"),  # `x` is nowhere: the furthest decides
        ("SUFFIX\n    new_name = 1", "window"),  # the first line is what is scored
    ],
)
def test_reach_is_the_furthest_place_a_name_of_the_hidden_line_is_seen(
    expected: str, where: str
) -> None:
    elsewhere = {"helpers", "LIMIT", "helper_two"}.__contains__
    assert reach(expected, WINDOW, DOCUMENT, elsewhere) == where
    # The window is part of the document: what the window lacks, the document may hold.
    assert reach("x = 1" if where == "unseen" else "import os", "", DOCUMENT, elsewhere) == (
        "unseen" if where == "unseen" else "file"
    )


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
        lines = original.split("\n")
        line = lines[task.line]
        assert task.prefix_text.endswith(line[: task.column])
        assert task.expected.split("\n")[0] == line[task.column :]
        assert task.suffix_text == "" or task.suffix_text.startswith("\n")
        # The masked document holds the line's start only: the hidden rest is gone from it.
        masked_lines = (task.prefix_text + task.suffix_text).split("\n")
        assert masked_lines[task.line] == line[: task.column]
        last = task.line + task.expected.count("\n")
        assert masked_lines[task.line + 1 :] == lines[last + 1 :]


def test_the_hidden_text_is_the_rest_of_the_innermost_statement() -> None:
    text = (
        "class C:\n"  # 0: the class holds every line up to 7
        "    @cached\n"  # 1: a decorator starts its definition
        "    def f(self,\n"  # 2
        "          a):\n"  # 3
        "        x = 1\n"  # 4: a statement of its own inside the body
        "        return (x +\n"  # 5
        "            a)\n"  # 6
        "    y = [1,\n"  # 7
        "         2]\n"  # 8
        "z = 3\n"  # 9
    )
    span = hidden_span(text)
    assert [span[n] for n in range(10)] == [8, 6, 6, 6, 4, 6, 6, 8, 8, 9]
    assert hidden_span("def f(:\n") == {}


def test_a_position_inside_a_long_statement_hides_the_statement_s_later_lines(
    tmp_path: Path,
) -> None:
    call = "result = compute(first_argument,\n                 second_argument)\n"
    body = "".join(f"value_{i} = compute({i}, factor)\n" for i in range(24))
    (tmp_path / "a.py").write_text(call * 6 + body, encoding="utf-8")
    tasks = [t for t in sample_tasks(tmp_path, 30, seed=1) if t.line < 12]
    assert tasks
    for task in tasks:
        if task.line % 2 == 0:  # the call's first line: its second line is not typed yet
            assert task.expected.endswith("\n                 second_argument)")
        else:
            assert "\n" not in task.expected
        assert not task.suffix_text.split("\n")[1].startswith(" ")


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
        line = (task.prefix_text.split("\n")[-1] + task.expected.split("\n")[0]).strip()
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


def _task(expected: str, kind: str, uses_other_file: bool = False, line: int = 0) -> Task:
    return Task(
        path=Path("m.py"),
        relative="m.py",
        line=line,
        column=0,
        prefix_text="",
        suffix_text="",
        expected=expected,
        kind=kind,
        uses_other_file=uses_other_file,
    )


class Model:
    """Answers each prompt as `answer(prompt)` says, and counts the calls."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[str] = []

    def condition(self, name: str, prompt=None, tokens: int = 100) -> Condition:
        """A condition whose prompt is `prompt(task)` (default: the condition's name and the
        task's position)."""

        async def prepare(task: Task) -> Prepared | None:
            text = prompt(task) if prompt else f"{name}|{task.id}"
            if text is None:
                return None

            async def run() -> Completion:
                self.calls.append(text)
                raw, latency = self.answer(name, task)
                return Completion(raw, latency, tokens)

            return Prepared(hashlib.sha256(text.encode()).hexdigest(), 1, run)

        return prepare


async def test_run_quality_bench_aggregates_per_condition_kind_and_other_file(tmp_path) -> None:
    tasks = [
        _task("alpha = 1", NEXT_LINE),
        _task("beta(2)", MID_LINE, uses_other_file=True, line=1),
    ]

    def answer(name: str, task: Task) -> tuple[str, float]:
        if name == "none":
            return "", 10.0
        if name == "windows":
            return ("alpha = 1", 20.0) if task.kind == NEXT_LINE else ("gamma(2)", 30.0)
        return task.expected + "\nextra line", 40.0

    model = Model(answer)
    conditions = {
        "none": model.condition("none", tokens=50),
        "windows": model.condition("windows"),
        "full": model.condition("full", tokens=300),
    }
    messages: list[str] = []
    results = ResultsFile(tmp_path / "r.jsonl")
    result = await run_quality_bench(tasks, conditions, results, "m", progress=messages.append)

    assert len(model.calls) == 6 and len(messages) == 6
    assert messages[-1].startswith("6/6 ") and "ETA" in messages[-1]
    assert (result["ran"], result["stored"], result["remaining"]) == (6, 0, 0)
    assert result["samples"] == 2
    assert result["conditions"] == ["none", "windows", "full"]
    assert (result["em_none"], result["em_windows"], result["em_full"]) == (0.0, 50.0, 100.0)
    assert (result["es_none"], result["es_full"]) == (0.0, 100.0)
    # gamma(2) against beta(2): 4 edits over 8 characters.
    assert result["es_windows"] == pytest.approx((100 + 50) / 2)
    assert (result["id_none"], result["id_windows"], result["id_full"]) == (0.0, 50.0, 100.0)
    assert (result["tokens_none"], result["tokens_full"], result["n_full"]) == (50.0, 300.0, 2)
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
    metrics, paired = (part.splitlines() for part in result["table"].split("\n\n"))
    assert metrics[0].startswith("| condition | n | EM | ES | ID | EM next-line | EM mid-line |")
    assert metrics[2:] == [
        "| none | 2 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 50 | 100.0 | 10 |",
        "| windows | 2 | 50.0 | 75.0 | 50.0 | 100.0 | 0.0 | 0.0 | 100 | 100.0 | 25 |",
        "| full | 2 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 300 | 0.0 | 40 |",
    ]  # "extra line" is no Python
    # Position by position: windows wins the next-line task from none; full wins both from
    # none (2 of 2 from a fair coin: p = 0.5) and the mid-line one from windows.
    assert result["paired"] == {
        "windows": {"none": {"wins": 1, "losses": 0, "p": 1.0}},
        "full": {
            "none": {"wins": 2, "losses": 0, "p": 0.5},
            "windows": {"wins": 1, "losses": 0, "p": 1.0},
        },
    }
    assert result["per_reach"]["window"]["samples"] == 0  # these tasks had no window set
    assert paired == [
        "| condition | vs none: won / lost (p) | vs windows: won / lost (p) |",
        "|---|---:|---:|",
        "| windows | 1 / 0 (1.00) |  |",
        "| full | 2 / 0 (0.50) | 1 / 0 (1.00) |",
    ]
    assert result["parse_rate"] == pytest.approx(200 / 3, abs=0.01)
    assert result["parse_samples"] == 2
    assert "per_task" not in result


async def test_em_is_broken_down_by_reach(tmp_path) -> None:
    tasks = [
        _task("a = 1", NEXT_LINE),
        _task("b = 2", MID_LINE, line=1),
        _task("c", NEXT_LINE, line=2),
    ]
    for task, where in zip(tasks, ("window", "unseen", "window"), strict=True):
        task.reach = where
    model = Model(lambda name, task: (task.expected if task.line == 0 else "", 1.0))
    result = await run_quality_bench(
        tasks, {"none": model.condition("none")}, ResultsFile(tmp_path / "r.jsonl"), "m"
    )
    per_reach = result["per_reach"]
    assert (per_reach["window"]["samples"], per_reach["window"]["em_none"]) == (2, 50.0)
    assert (per_reach["unseen"]["samples"], per_reach["unseen"]["em_none"]) == (1, 0.0)
    assert per_reach["file"]["samples"] == per_reach["repository"]["samples"] == 0
    table = result["table"].split("\n\n")[1].splitlines()
    assert table == [
        "| condition | EM window (2) | EM unseen (1) |",
        "|---|---:|---:|",
        "| none | 50.0 | 0.0 |",
    ]


async def test_run_quality_bench_rotates_condition_order_and_keeps_predictions(tmp_path) -> None:
    model = Model(lambda name, task: (name, 1.0))
    tasks = [_task("x = 1", NEXT_LINE), _task("y = 2", MID_LINE, line=1)]
    conditions = {"a": model.condition("a"), "b": model.condition("b")}
    result = await run_quality_bench(
        tasks, conditions, ResultsFile(tmp_path / "r.jsonl"), "m", keep_predictions=True
    )
    assert model.calls == ["a|m.py:1:0", "b|m.py:1:0", "b|m.py:2:0", "a|m.py:2:0"]
    assert result["em_a"] == 0.0 and "em_none" not in result
    rows = result["per_task"]
    assert len(rows) == 4
    assert {row["condition"] for row in rows} == {"a", "b"}
    assert rows[0]["prediction"] == "a" and rows[0]["expected"] == "x = 1"


async def test_run_quality_bench_with_no_tasks(tmp_path) -> None:
    model = Model(lambda name, task: ("", 0.0))
    result = await run_quality_bench(
        [], {"none": model.condition("none")}, ResultsFile(tmp_path / "r.jsonl"), "m"
    )
    assert result["samples"] == 0 and result["em_none"] == 0.0 and result["p50_ms"] == 0.0
    assert result["other_file"]["samples"] == 0 and result["ran"] == 0


TASKS = [_task(f"v{i} = {i}", (NEXT_LINE, MID_LINE)[i % 2], line=i) for i in range(4)]


async def test_a_rerun_answers_from_the_results_file_without_the_model(tmp_path) -> None:
    def conditions(model: Model) -> dict[str, Condition]:
        return {name: model.condition(name) for name in ("none", "full")}

    first = Model(lambda name, task: (task.expected if name == "full" else "x", 5.0))
    path = tmp_path / "r.jsonl"
    before = await run_quality_bench(TASKS, conditions(first), ResultsFile(path), "m")
    assert len(first.calls) == before["ran"] == 8

    again = Model(lambda name, task: ("never asked", 1.0))
    after = await run_quality_bench(TASKS, conditions(again), ResultsFile(path), "m")
    assert again.calls == [] and (after["ran"], after["stored"]) == (0, 8)
    assert after["table"] == before["table"]
    assert len(path.read_text().splitlines()) == 8
    # Another model's sha256 is another result.
    other = await run_quality_bench(TASKS, conditions(again), ResultsFile(path), "other")
    assert other["ran"] == 8 and other["em_full"] == 0.0


async def test_a_resumed_run_s_eta_counts_only_the_completions_it_runs(tmp_path) -> None:
    """Stored pairs take no time, so before the first completion the time left is unknown;
    the ETA after it is that completion's time per pair left (TASKS' first pairs are stored)."""
    path = tmp_path / "r.jsonl"
    model = Model(lambda name, task: ("x", 5.0))
    conditions = {"none": model.condition("none")}
    await run_quality_bench(TASKS[:1], conditions, ResultsFile(path), "m")
    messages: list[str] = []
    await run_quality_bench(TASKS, conditions, ResultsFile(path), "m", progress=messages.append)
    assert "stored" in messages[0] and messages[0].endswith("ETA ?")
    assert "ran" in messages[1] and re.search(r"ETA \d+m\d\ds$", messages[1])
    assert messages[-1].endswith("ETA 0m00s")


async def test_only_changed_prompts_are_sent_again(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    model = Model(lambda name, task: (task.expected, 5.0))
    version = {"context": "v1"}

    def full_prompt(task: Task) -> str:
        # The context source changed only for the positions on even lines.
        changed = version["context"] if task.line % 2 == 0 else "v1"
        return f"full|{task.id}|{changed}"

    conditions = {"none": model.condition("none"), "full": model.condition("full", full_prompt)}
    await run_quality_bench(TASKS, conditions, ResultsFile(path), "m")
    model.calls.clear()
    version["context"] = "v2"
    result = await run_quality_bench(TASKS, conditions, ResultsFile(path), "m")
    assert model.calls == ["full|m.py:1:0|v2", "full|m.py:3:0|v2"]
    assert (result["ran"], result["stored"]) == (2, 6)


async def test_a_prompt_another_condition_answered_is_not_sent_again(tmp_path) -> None:
    model = Model(lambda name, task: (task.expected, 5.0))

    def same(task: Task) -> str:
        return task.id  # both conditions build the same prompt

    conditions = {"none": model.condition("none", same), "assets": model.condition("a", same)}
    result = await run_quality_bench(TASKS, conditions, ResultsFile(tmp_path / "r.jsonl"), "m")
    assert len(model.calls) == result["ran"] == 4 and result["shared"] == 4
    assert result["em_assets"] == result["em_none"] == 100.0


async def test_a_condition_that_does_not_apply_is_skipped(tmp_path) -> None:
    model = Model(lambda name, task: (task.expected, 5.0))

    def odd_only(task: Task) -> str | None:
        return f"a|{task.id}" if task.line % 2 else None

    conditions = {"assets": model.condition("assets", odd_only)}
    result = await run_quality_bench(TASKS, conditions, ResultsFile(tmp_path / "r.jsonl"), "m")
    assert (result["ran"], result["skipped"], result["n_assets"]) == (2, 2, 2)


async def test_the_time_limit_stops_between_completions_and_a_rerun_resumes(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    model = Model(lambda name, task: (task.expected, 5.0))
    conditions = {name: model.condition(name) for name in ("none", "full")}
    # No time at all: one completion runs (every run makes progress), then it stops.
    first = await run_quality_bench(TASKS, conditions, ResultsFile(path), "m", max_seconds=0)
    assert (first["ran"], first["remaining"]) == (1, 7)
    assert first["n_none"] + first["n_full"] == 1
    assert len(path.read_text().splitlines()) == 1
    second = await run_quality_bench(TASKS, conditions, ResultsFile(path), "m", max_seconds=0)
    assert (second["stored"], second["ran"], second["remaining"]) == (1, 1, 6)
    last = await run_quality_bench(TASKS, conditions, ResultsFile(path), "m")
    assert (last["stored"], last["ran"], last["remaining"]) == (2, 6, 0)
    assert len(model.calls) == 8 and len(set(model.calls)) == 8


def test_the_results_file_survives_a_torn_line_and_later_lines_win(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    results = ResultsFile(path)
    results.add(Result("t", "full", "p", "m", "old", 1.0, 10, 0))
    results.add(Result("t", "full", "p", "m", "new \ud83d", 2.0, 10, 0))
    with path.open("a", encoding="utf-8") as f:
        f.write('{"task": "t2", "condition": "full", "prompt_sha')  # a run killed mid-line
    again = ResultsFile(path)
    assert len(again) == 1
    found = again.find("t", "full", "p", "m")
    assert found is not None and found.raw == "new \ud83d" and found.latency_ms == 2.0
    assert again.find("t", "full", "other prompt", "m") is None
    again.add(Result("t2", "full", "p2", "m", "after", 1.0, 10, 0))  # appends after the tear
    assert ResultsFile(path).find("t2", "full", "p2", "m") is not None


# --- accept and parse -------------------------------------------------------------------------


def _masked(name: str, prefix: str, expected: str, suffix: str) -> Task:
    return Task(Path(name), name, 0, 0, prefix, suffix, expected, NEXT_LINE)


PY = _masked("m.py", "def f(x):\n    y = x\n    ", "return y", "\n\n\ndef g():\n    return 2\n")
JS = _masked("m.js", "function f(x) {\n  ", "return x;", "\n}\nf(1);\n")
# The hidden text is a def whose parameters go on over two more lines, and its body.
LONG_DEF = dataclasses.replace(
    _masked(
        "m.py",
        "class C:\n\n    ",
        "def run(self, a,\n            b,\n            c):\n        return a + b + c",
        "\n\n    x = 1\n",
    ),
    line=2,
)
# The hidden text ends a statement that began above it.
LAST_LINE = dataclasses.replace(
    _masked("m.py", "total = (1 +\n         ", "2)", "\nprint(total)\n"), line=1
)


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
        (LONG_DEF, "def run(self, a, b, c):", True),  # gets its body
        (LONG_DEF, "x = 2", True),  # a statement in place of the definition
        (LONG_DEF, "def run(self, a,", False),  # the line as written leaves `(` open
        (LONG_DEF, "    def go(self):", False),  # the typed indentation repeated
        (LAST_LINE, "2)", True),
        (LAST_LINE, "2 +", False),  # a dangling operator: no lines to drop after it
        (_masked("m.py", "def f(:\n    ", "pass", "\n"), "pass", None),  # never parsed
        (_masked("notes.txt", "a\n", "b", "\n"), "b", None),  # no parser for it
    ],
)
def test_accepting_the_whole_suggestion_leaves_the_file_parsing(task, prediction, parses):
    assert accepted_parses(task, prediction) is parses


def test_a_line_without_generated_tokens_is_asked_again(tmp_path) -> None:
    """Post-processing needs to know whether the token limit cut an answer: a line written
    before the count was kept is not reused."""
    path = tmp_path / "r.jsonl"
    ResultsFile(path).add(Result("new", "full", "p", "m", "a", 1.0, 10, 0, 48))
    old = dataclasses.asdict(Result("old", "full", "p", "m", "b", 1.0, 10, 0))
    del old["generated_tokens"]
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(old) + "\n")
    again = ResultsFile(path)
    assert again.find("old", "full", "p", "m") is None
    found = again.find("new", "full", "p", "m")
    assert found is not None and found.generated_tokens == 48


# --- the command, on the tiny model ------------------------------------------------------------

LIB = '''"""Helpers."""


def scale(value: float, factor: float) -> float:
    return value * factor


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
'''

APP = "".join(
    f"def step_{i}(x: float) -> float:\n    y = scale(x, {i}.5)\n    return clamp(y, 0, {i})\n\n"
    for i in range(8)
)


def bench(model: Path, repo: Path | list[Path], results: Path, *options: str) -> tuple[dict, str]:
    repos = [
        item
        for path in (repo if isinstance(repo, list) else [repo])
        for item in ("--repo", str(path))
    ]
    out = subprocess.run(
        [
            *CLI,
            *("bench", "quality", *repos, "--model", str(model), "--threads", "1"),
            *("--samples", "3", "--seed", "3", "--results", str(results), "--json"),
            *("--predictions", *options),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout), out.stderr


def _prompts(result: dict) -> dict[tuple[str, str], str]:
    return {(row["task"], row["condition"]): row["prompt_sha256"] for row in result["per_task"]}


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "lib.py").write_text(LIB, encoding="utf-8")  # too short to be sampled
    (repo / "app.py").write_text(APP, encoding="utf-8")
    return repo


CONDITIONS = ["--conditions", "none,definitions,full"]


def test_a_rerun_sends_no_prompt_and_a_changed_source_only_what_it_changed(
    tiny_model: Path, small_repo: Path, tmp_path: Path
):
    results = tmp_path / "results.jsonl"
    first, stderr = bench(tiny_model, small_repo, results, *CONDITIONS)
    assert {row["reach"] for row in first["per_task"]} <= set(REACHES) - {""}
    pairs = first["samples"] * 3
    assert first["samples"] == 3 and first["ran"] + first["shared"] == pairs
    assert f"{pairs}/{pairs} " in stderr and "ETA" in stderr
    lines = len(results.read_text().splitlines())
    assert lines == pairs

    again, _ = bench(tiny_model, small_repo, results, *CONDITIONS)
    assert (again["ran"], again["shared"], again["stored"]) == (0, 0, pairs)
    assert again["table"] == first["table"]
    assert len(results.read_text().splitlines()) == lines

    # A context source changes (a definition the prompts quote): only its prompts run again.
    lib = small_repo / "lib.py"
    lib.write_text(LIB.replace("value * factor", "value * factor * 2"), encoding="utf-8")
    changed, _ = bench(tiny_model, small_repo, results, *CONDITIONS)
    before, after = _prompts(first), _prompts(changed)
    differ = {pair for pair in after if after[pair] != before[pair]}
    assert differ and all(condition != "none" for _task, condition in differ)
    assert changed["ran"] + changed["shared"] == len(differ)
    assert changed["stored"] == pairs - len(differ)


def test_an_answer_is_reused_only_under_the_stop_mode_it_was_generated_in(
    tiny_model: Path, small_repo: Path, tmp_path: Path
):
    """Where generation stops (one line, or where post-processing ends a block) decides the
    answer as the prompt does: answers stored in one mode are not reused in the other. The
    default mode (auto) picks one of the two per position, so after runs in both it sends
    nothing."""
    results = tmp_path / "results.jsonl"
    mode = ("--conditions", "none", "--set", "completion.multiline=")
    never, _ = bench(tiny_model, small_repo, results, *mode[:-1], mode[-1] + "never")
    always, _ = bench(tiny_model, small_repo, results, *mode[:-1], mode[-1] + "always")
    assert always["ran"] == always["samples"] and always["stored"] == always["shared"] == 0
    auto, _ = bench(tiny_model, small_repo, results, *mode[:2])
    assert auto["stored"] == auto["samples"] and auto["ran"] == auto["shared"] == 0
    hashes = _prompts(never), _prompts(always), _prompts(auto)
    assert all(hashes[0][pair] != hashes[1][pair] for pair in hashes[0])
    assert all(hashes[2][pair] in (hashes[0][pair], hashes[1][pair]) for pair in hashes[2])


def test_max_minutes_stops_cleanly_and_a_rerun_resumes(
    tiny_model: Path, small_repo: Path, tmp_path: Path
):
    results = tmp_path / "results.jsonl"
    stopped, stderr = bench(tiny_model, small_repo, results, *CONDITIONS, "--max-minutes", "0")
    assert stopped["ran"] == 1 and stopped["remaining"] == stopped["samples"] * 3 - 1
    assert "resumes" in stderr and str(results) in stderr
    assert "| none |" in stopped["table"]
    assert len(results.read_text().splitlines()) == 1
    resumed, _ = bench(tiny_model, small_repo, results, *CONDITIONS)
    assert resumed["stored"] == 1 and resumed["remaining"] == 0
    assert resumed["stored"] + resumed["ran"] + resumed["shared"] == resumed["samples"] * 3


def test_unknown_conditions_are_refused_with_the_known_ones(tiny_model: Path, small_repo: Path):
    out = subprocess.run(
        [*CLI, "bench", "quality", "--repo", str(small_repo), "--conditions", "full,magic"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "magic" in out.stderr and "windows+definitions" in out.stderr


def test_reach_runs_only_the_positions_of_those_reaches(
    tiny_model: Path, small_repo: Path, tmp_path: Path
):
    results = tmp_path / "results.jsonl"
    everything, _ = bench(tiny_model, small_repo, results, "--conditions", "none")
    found = [row["reach"] for row in everything["per_task"]]
    for where in REACHES:
        only, _ = bench(tiny_model, small_repo, results, "--conditions", "none", "--reach", where)
        assert [row["reach"] for row in only["per_task"]] == [r for r in found if r == where]
        assert only["samples"] == found.count(where) and only["ran"] == 0
    every = ("--conditions", "none", "--reach", "unseen,window,file,repository")
    both, _ = bench(tiny_model, small_repo, results, *every)
    assert _prompts(both) == _prompts(everything) and both["table"] == everything["table"]
    out = subprocess.run(
        [*CLI, "bench", "quality", "--repo", str(small_repo), "--reach", "window,far"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "far" in out.stderr and "repository" in out.stderr


def test_several_repositories_make_one_table_of_the_prompts_each_gets_alone(
    tiny_model: Path, small_repo: Path, tmp_path: Path
):
    """Each repository is indexed on its own: a position's prompt is the one its repository's
    own run sends, so answers built up repository by repository are reused, and the ids say
    which repository a position is from."""
    other = tmp_path / "other"
    shutil.copytree(small_repo, other)
    (other / "app.py").write_text(APP.replace("scale(x", "clamp(x"), encoding="utf-8")
    results = tmp_path / "results.jsonl"
    alone = [bench(tiny_model, repo, results, *CONDITIONS)[0] for repo in (small_repo, other)]
    both, _ = bench(tiny_model, [small_repo, other], results, *CONDITIONS)
    assert both["samples"] == sum(result["samples"] for result in alone)
    assert both["ran"] == 0 and both["shared"] == both["samples"] * 3
    assert {row["task"].split("/")[0] for row in both["per_task"]} == {"repo", "other"}
    separately = {row["prompt_sha256"] for result in alone for row in result["per_task"]}
    assert {row["prompt_sha256"] for row in both["per_task"]} == separately


def test_two_repositories_of_one_folder_name_are_refused(small_repo: Path, tmp_path: Path):
    twin = tmp_path / "elsewhere" / small_repo.name
    shutil.copytree(small_repo, twin)
    out = subprocess.run(
        [*CLI, "bench", "quality", "--repo", str(small_repo), "--repo", str(twin)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and small_repo.name in out.stderr
