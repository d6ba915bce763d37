"""`codeagent-lsp bench quality`: how much repository context improves completions.

Cursor positions are sampled with a fixed seed from a real repository, the rest of the
statement the cursor is in is hidden (code being written: its later lines are not typed yet),
and the line is completed under several conditions (no repository context, one context
source, the full context builder) with the same model and budget. Each completion is scored as
in the CrossCodeEval / RepoCoder literature: exact match, edit similarity and identifier match
on the first line, plus whether the file still parses once it is accepted. This module
samples, runs against a results file, scores and aggregates; the caller supplies one async
callable per condition that builds the prompt through the server's completion path.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import math
import os
import random
import re
import statistics
import time
import tokenize
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter

from codeagent_lsp.bench.results import Result, ResultsFile
from codeagent_lsp.codegraph import extract, languages
from codeagent_lsp.context import postprocess

NEXT_LINE = "next-line"
MID_LINE = "mid-line"
KINDS = (NEXT_LINE, MID_LINE)

# Folders that hold no code of the repository's own (dependencies, caches) or test code, whose
# repetitive asserts would flatter every condition.
_SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "site-packages",
        "__pycache__",
        "node_modules",
        "venv",
        "build",
        "dist",
    }
)
_MIN_FILE_LINES = 20
_MIN_CODE_CHARS = 8
_MAX_LINE_CHARS = 160
# Larger files are generated (vendored bundles, tables); they are not what a person types.
_MAX_FILE_BYTES = 1 << 20
_PER_FILE = 3
# A mid-line cut leaves at least this much to predict: a lone ")" or ":" measures nothing.
_MIN_REST_CHARS = 2
_TOKEN = re.compile(r"\w+|\S")
_IDENTIFIER = re.compile(r"[^\W\d]\w*")
# Comment openers by language family: "#" starts C's #include, "*" Python's star-unpacking.
_HASH_COMMENTS = frozenset({".py", ".pyi", ".rb", ".sh", ".pl", ".r"})
_SLASH_COMMENTS = ("//", "/*", "* ", "*/")
# Python 3.12+ tokenizes f-strings in parts; on 3.11 these never match a token type.
_FSTRING_START = getattr(tokenize, "FSTRING_START", -1)
_FSTRING_END = getattr(tokenize, "FSTRING_END", -1)


@dataclass
class Task:
    """One masked cursor: the document is `prefix_text + suffix_text`, the hidden text
    `expected` (see `hidden_span`; its first line is what the line metrics score).

    `line` and `column` are 0-based; `column` counts characters (code points) of the line, so
    `prefix_text` ends at it. `suffix_text` starts with the newline that ended the hidden
    text's last line (empty when it was the file's last line without one). `uses_other_file`
    is left for the caller to set (e.g. when the expected line names a symbol defined in
    another file).
    """

    path: Path
    relative: str
    line: int
    column: int
    prefix_text: str
    suffix_text: str
    expected: str
    kind: str
    uses_other_file: bool = False
    reach: str = ""
    """One of REACHES, left for the runner to set from the prompt's window (see `reach`)."""
    label: str = ""
    """Put before the id: the repository's folder name and "/" when a run spans several."""

    @property
    def id(self) -> str:
        """`[label]relative:line:column` (line 1-based, column 0-based): names the position
        in the results file."""
        return f"{self.label}{self.relative}:{self.line + 1}:{self.column}"


# --- sampling ---------------------------------------------------------------------------------


def sample_tasks(
    root: Path, samples: int, seed: int, extensions: Sequence[str] = (".py",)
) -> list[Task]:
    """Up to `samples` tasks from the files under `root`, the same ones for the same seed.

    Kinds alternate so half are next-line and half mid-line. Each file gives at most
    `max(3, ceil(samples / files))` tasks: the sample spreads over the repository, and a small
    repository still yields the requested count when it can.
    """
    root = root.expanduser().resolve()
    rng = random.Random(seed)
    files = list(_source_files(root, tuple(extensions)))
    rng.shuffle(files)
    cap = max(_PER_FILE, math.ceil(samples / len(files))) if files else 0
    tasks: list[Task] = []
    for path in files:
        if len(tasks) >= samples:
            break
        tasks.extend(_tasks_in_file(root, path, rng, min(cap, samples - len(tasks)), len(tasks)))
    return tasks


def _source_files(root: Path, extensions: tuple[str, ...]) -> Iterator[Path]:
    """Candidate files in sorted order, so the seed alone decides the sample."""
    for folder, dirs, names in os.walk(root):
        # Pruned in place so os.walk never descends into dependencies or hidden folders.
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            if name.endswith(extensions) and not path.is_symlink():
                yield path


def _tasks_in_file(
    root: Path, path: Path, rng: random.Random, limit: int, already: int
) -> list[Task]:
    text = _read(path)
    if text is None:
        return []
    lines = text.split("\n")
    if len(lines) < _MIN_FILE_LINES:
        return []
    candidates = _candidate_lines(text, lines, path.suffix.lower())
    chosen = sorted(rng.sample(candidates, min(limit, len(candidates))))
    relative = path.relative_to(root).as_posix()
    last = hidden_span(text) if path.suffix.lower() in (".py", ".pyi") else {}
    tasks: list[Task] = []
    for number in chosen:
        # The kind alternates over the whole sample, not per file, to keep the halves even.
        kind = KINDS[(already + len(tasks)) % 2]
        column = _cut_column(lines[number], kind, rng)
        end = last.get(number, number)
        tasks.append(_mask(path, relative, lines, (number, column, end), kind))
    return tasks


def hidden_span(text: str) -> dict[int, int]:
    """0-based line -> the 0-based last line of the innermost Python statement holding it
    ({} when `text` does not parse).

    A position's hidden text runs from the cursor to the end of that line: the rest of a
    statement being written (a call's later arguments, a compound statement's body and
    clauses) is not typed yet, so it is neither in the prompt nor in the file that is parsed.
    A decorated definition starts at its first decorator. Other languages hide the rest of
    the cursor's line only.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.end_lineno:
            decorators = getattr(node, "decorator_list", [])
            start = min([node.lineno, *(d.lineno for d in decorators)]) - 1
            spans.append((start, node.end_lineno - 1))
    last: dict[int, int] = {}
    # Outer statements first, so the innermost one holding a line is the one that stays.
    for start, end in sorted(spans, key=lambda span: span[0] - span[1]):
        last.update(dict.fromkeys(range(start, end + 1), end))
    return last


def _read(path: Path) -> str | None:
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _candidate_lines(text: str, lines: list[str], suffix: str) -> list[int]:
    """Line numbers worth completing: real code, not too short or long, cuttable mid-line."""
    prose = _python_prose_lines(text) if suffix in (".py", ".pyi") else set()
    comment = ("#",) if suffix in _HASH_COMMENTS else _SLASH_COMMENTS
    return [
        number
        for number, line in enumerate(lines)
        if number not in prose and _is_code_line(line, comment) and _mid_cuts(line)
    ]


def _is_code_line(line: str, comment: tuple[str, ...]) -> bool:
    code = line.strip()
    return (
        len(code) >= _MIN_CODE_CHARS
        and len(line) <= _MAX_LINE_CHARS
        and not code.startswith(comment)
        and not code.startswith(('"""', "'''"))
    )


def _python_prose_lines(text: str) -> set[int]:
    """0-based lines that are docstrings, bare string statements or inside a multi-line string.

    Tokenizing is the reliable way to know a line sits inside a string; a file that does not
    tokenize is left to the line-level checks in `_is_code_line`. Comment lines are caught there.
    """
    prose: set[int] = set()
    statement_start = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    previous, opened = tokenize.NEWLINE, None
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == _FSTRING_START:
                # Python 3.12+ splits f-strings into parts; the span runs from start to end.
                opened = (token.start[0], previous)
            elif token.type in (tokenize.STRING, _FSTRING_END):
                first, before = (token.start[0], previous) if opened is None else opened
                opened = None
                prose.update(range(first, token.end[0]))  # lines that open inside the string
                if before in statement_start:
                    prose.add(first - 1)  # a docstring's opening line holds no code
            if token.type not in (tokenize.NL, tokenize.COMMENT) and opened is None:
                previous = token.type
    except (tokenize.TokenError, SyntaxError):
        return set()
    return prose


def _mid_cuts(line: str) -> list[int]:
    """Columns just after a token that leave at least one token and a few characters to type."""
    start = len(line) - len(line.lstrip())
    code_end = len(line.rstrip())
    return [
        match.end()
        for match in _TOKEN.finditer(line)
        if start < match.end() and len(line[match.end() : code_end].strip()) >= _MIN_REST_CHARS
    ]


def _cut_column(line: str, kind: str, rng: random.Random) -> int:
    if kind == NEXT_LINE:
        return len(line) - len(line.lstrip())
    return rng.choice(_mid_cuts(line))


def _mask(
    path: Path, relative: str, lines: list[str], cut: tuple[int, int, int], kind: str
) -> Task:
    """The task that hides from (line, column) to the end of line `end` (`cut`)."""
    number, column, end = cut
    before = "".join(line + "\n" for line in lines[:number])
    after = "".join("\n" + line for line in lines[end + 1 :])
    line = lines[number]
    return Task(
        path=path,
        relative=relative,
        line=number,
        column=column,
        prefix_text=before + line[:column],
        suffix_text=after,
        expected="\n".join([line[column:], *lines[number + 1 : end + 1]]),
        kind=kind,
    )


# --- metrics ----------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    """The completion's first line, stripped: later lines are a bonus no metric here scores."""
    return text.split("\n", 1)[0].strip()


def exact_match(prediction: str, expected: str) -> bool:
    """First lines equal after stripping surrounding whitespace (inner spacing counts)."""
    return _first_line(prediction) == _first_line(expected)


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insert, delete, substitute all cost 1).

    Written out because the project takes no dependency for it, and difflib's ratio() is a
    different measure (matching blocks), not the edit similarity the papers report.
    """
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))  # two rows of the DP table: O(len(b)) memory
    for i, char_a in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, char_b in enumerate(b, 1):
            diagonal, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, diagonal + (char_a != char_b)),
            )
    return row[-1]


def edit_similarity(prediction: str, expected: str) -> float:
    """0-100: `1 - levenshtein / max(len)` on the stripped first lines; two empties score 100."""
    a, b = _first_line(prediction), _first_line(expected)
    longest = max(len(a), len(b))
    return 100.0 if longest == 0 else 100.0 * (1 - levenshtein(a, b) / longest)


def identifiers(text: str) -> list[str]:
    """Identifiers of the first line in order, Python keywords left out."""
    return [word for word in _IDENTIFIER.findall(_first_line(text)) if not keyword.iskeyword(word)]


REACHES = ("window", "file", "repository", "unseen")


def reach(expected: str, window: str, document: str, elsewhere: Callable[[str], bool]) -> str:
    """Where the names of the hidden text's first line can be seen, the furthest decides:
    all in the prompt's own window of the document ("window": context cannot add them),
    in the document outside that window ("file"), defined in another file of the repository
    (`elsewhere(name)`: "repository"), or none of these ("unseen": a new name, or one from
    outside the repository such as a library's attribute; retrieval from the repository
    cannot supply it). Keywords and builtins count as seen. Breaking EM down by reach shows where
    repository context can win at all."""
    names = [name for name in identifiers(expected) if name not in _BUILTINS]
    found = "window"
    for name in names:
        word = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
        if word.search(window):
            continue
        seen = "file" if word.search(document) else "repository" if elsewhere(name) else "unseen"
        found = max(found, seen, key=REACHES.index)
    return found


_BUILTINS = frozenset(dir(builtins))


def identifier_match(prediction: str, expected: str) -> float:
    """0-100: F1 over the identifier multisets of the two first lines (CrossCodeEval's ID F1).

    Two lines without identifiers score 100; one without, against one with, scores 0.
    """
    predicted, wanted = Counter(identifiers(prediction)), Counter(identifiers(expected))
    if not predicted and not wanted:
        return 100.0
    common = sum((predicted & wanted).values())
    if common == 0:
        return 0.0
    precision = common / sum(predicted.values())
    recall = common / sum(wanted.values())
    return 100.0 * 2 * precision * recall / (precision + recall)


# --- accept and parse ------------------------------------------------------------------------


_CLOSERS = {"{": "}", "(": ")", "[": "]"}


def accepted_parses(task: Task, prediction: str) -> bool | None:
    """Does the file still parse once the whole suggestion is accepted in place of the hidden
    text? None when the original file does not parse (the position is not counted). A
    suggestion that ends by opening a block is also tried with the language's empty body
    (`pass` after a colon, the closing bracket after an opening one): the user types the
    body next.

    Python is parsed with `ast`; other languages with tree-sitter, where parsing means no more
    ERROR or MISSING nodes than the original file has.
    """
    language = languages.language_for(task.path)
    errors = _parse_errors(task.prefix_text + task.expected + task.suffix_text, language)
    if errors is None or errors > 0:
        return None
    accepted = task.prefix_text + prediction
    line = accepted.rpartition("\n")[2]
    endings = [""]
    if postprocess.opens_block(line):
        indent = line[: len(line) - len(line.lstrip())]
        closer = _CLOSERS.get(line.rstrip()[-1:])
        endings.insert(0, f"\n{indent}    pass" if closer is None else f"\n{indent}{closer}")
    return any(_parse_errors(accepted + end + task.suffix_text, language) == 0 for end in endings)


def _parse_errors(text: str, language: str | None) -> int | None:
    """How many syntax errors a file has (Python: 0 or 1), None for a language not known."""
    if language == "python":
        try:
            ast.parse(text)
        except (SyntaxError, ValueError):  # ValueError: a NUL byte
            return 1
        return 0
    if language is None:
        return None
    tree = extract.parse(text.encode("utf-8", errors="surrogatepass"), language)
    return _error_nodes(tree.root_node)


def _error_nodes(node: tree_sitter.Node) -> int:
    if not node.has_error:
        return 0
    own = 1 if node.type == "ERROR" or node.is_missing else 0
    return own + sum(_error_nodes(child) for child in node.children)


# --- running and aggregating ------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """A model call's outcome: the answer before post-processing, wall time, prompt size,
    tokens generated."""

    raw: str
    latency_ms: float
    prompt_tokens: int
    generated_tokens: int = 0


@dataclass(frozen=True)
class Prepared:
    """A condition's prompt for one task, hashed and ready to send."""

    prompt_sha256: str
    context_files: int
    run: Callable[[], Awaitable[Completion]]


Condition = Callable[[Task], Awaitable[Prepared | None]]
"""Builds a task's prompt under one condition; None where the condition does not apply."""
Finish = Callable[[Task, Result], str]
"""Post-processing: (task, the model's stored answer) -> the suggestion scored."""


@dataclass
class _Score:
    task: Task
    condition: str
    prediction: str
    result: Result
    how: str
    em: float
    es: float
    id: float
    parses: bool | None


@dataclass
class _Run:
    """Progress and the time limit of one run over `total` (task, condition) pairs."""

    total: int
    max_seconds: float | None
    started: float
    done: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    ran_seconds: float = 0.0
    """Wall time of the pairs this run completed with the model (stored ones take ~none)."""

    def out_of_time(self) -> bool:
        """Time is up, and this run has made progress (it always runs one completion)."""
        elapsed = time.monotonic() - self.started
        return (
            self.max_seconds is not None and self.counts["ran"] > 0 and elapsed >= self.max_seconds
        )

    def eta_seconds(self) -> float | None:
        """Seconds left if every pair not reached needs the model, at the mean time of the
        completions run so far (an upper bound where some are stored); None while unknown."""
        left = self.total - self.done
        if not left:
            return 0.0
        ran = self.counts["ran"]
        return self.ran_seconds / ran * left if ran else None


async def run_quality_bench(
    tasks: Sequence[Task],
    conditions: Mapping[str, Condition],
    results: ResultsFile,
    model: str,
    *,
    finish: Finish = lambda _task, result: result.raw,
    progress: Callable[[str], None] | None = None,
    keep_predictions: bool = False,
    max_seconds: float | None = None,
) -> dict[str, object]:
    """Complete every task under every condition, one at a time, and aggregate the scores.

    A (task, condition) pair whose exact prompt is already in `results` for `model` (the
    model's sha256) is scored from there; one whose prompt another stored result shares is
    copied (`shared`); the rest run and are stored as they finish (`ran`). With `max_seconds`,
    the run stops between completions once the time is up (after at least one completion)
    and reports what it has; `remaining` counts the pairs not reached.

    Keys: `samples`, `conditions`, `ran`, `stored`, `shared`, `skipped` (pairs where the
    condition did not apply), `remaining`, `n_<c>` (positions scored), `em_<c>`, `es_<c>`,
    `id_<c>` (means, 0-100), `tokens_<c>` (mean prompt tokens), `parse_rate_<c>` and
    `parse_rate` (0-100: of the `parse_samples` positions whose file parses, the share
    where the whole suggestion in place of the hidden text, the rest of the statement the
    cursor is in, leaves the file parsing; see `accepted_parses`), `p50_ms` (all
    completions), `p50_ms_<c>`, `per_kind` (the same metric keys per kind, with its
    `samples`), `other_file` (the same for tasks with `uses_other_file`), `per_reach` (the same by
    `Task.reach`, for tasks whose runner set it), `paired` (each
    condition's exact-match wins and losses against none and windows, position by position,
    with a sign test's p; see `_paired`) and `table` (markdown: the metrics, then the paired
    comparison). With `keep_predictions`,
    `per_task` lists every prediction and its scores.
    """
    say = progress or (lambda _m: None)
    names = list(conditions)
    run = _Run(len(tasks) * len(names), max_seconds, time.monotonic())
    scores: list[_Score] = []
    for index, task in enumerate(tasks):
        # The order rotates per task so a warm cache or warm-up left by one condition favours
        # each condition equally often.
        shift = index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            if run.out_of_time():
                return _aggregate(tasks, names, scores, keep_predictions, run)
            started = time.monotonic()
            score = await _one(task, name, conditions[name], results, model, finish, run)
            if score is not None and score.how == "ran":
                run.ran_seconds += time.monotonic() - started
            run.done += 1
            if score is not None:
                scores.append(score)
            say(_progress_line(run, task, name, score))
    return _aggregate(tasks, names, scores, keep_predictions, run)


async def _one(
    task: Task,
    name: str,
    condition: Condition,
    results: ResultsFile,
    model: str,
    finish: Finish,
    run: _Run,
) -> _Score | None:
    """One pair's score: from the results file when its prompt is there, else from the model."""
    prepared = await condition(task)
    if prepared is None:
        run.counts["skipped"] += 1
        return None
    found = results.find(task.id, name, prepared.prompt_sha256, model)
    how = "stored"
    if found is None:
        shared = results.same_prompt(prepared.prompt_sha256, model)
        if shared is not None:
            how, completion = (
                "shared",
                Completion(
                    shared.raw, shared.latency_ms, shared.prompt_tokens, shared.generated_tokens
                ),
            )
        else:
            how, completion = "ran", await prepared.run()
        found = Result(
            task.id,
            name,
            prepared.prompt_sha256,
            model,
            completion.raw,
            completion.latency_ms,
            completion.prompt_tokens,
            prepared.context_files,
            completion.generated_tokens,
        )
        results.add(found)
    run.counts[how] += 1
    return _score(task, name, finish(task, found), found, how)


def _progress_line(run: _Run, task: Task, name: str, score: _Score | None) -> str:
    what = "skipped" if score is None else f"{score.how} {score.result.latency_ms / 1000:.1f} s"
    seconds = run.eta_seconds()
    eta = "?" if seconds is None else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"
    return f"{run.done}/{run.total} {name} {task.id} {what}, ETA {eta}"


def _score(task: Task, condition: str, prediction: str, result: Result, how: str) -> _Score:
    return _Score(
        task=task,
        condition=condition,
        prediction=prediction,
        result=result,
        how=how,
        em=100.0 if exact_match(prediction, task.expected) else 0.0,
        es=edit_similarity(prediction, task.expected),
        id=identifier_match(prediction, task.expected),
        parses=accepted_parses(task, prediction),
    )


def _aggregate(
    tasks: Sequence[Task],
    names: list[str],
    scores: list[_Score],
    keep_predictions: bool,
    run: _Run,
) -> dict[str, object]:
    result: dict[str, object] = {"samples": len(tasks), "conditions": names}
    for how in ("ran", "stored", "shared", "skipped"):
        result[how] = run.counts[how]
    result["remaining"] = run.total - run.done
    result.update(_metrics(names, scores))
    result["p50_ms"] = _median([s.result.latency_ms for s in scores])
    for name in names:
        mine = [s.result.latency_ms for s in scores if s.condition == name]
        result[f"p50_ms_{name}"] = _median(mine)
    result["per_kind"] = {
        kind: _block(names, [s for s in scores if s.task.kind == kind]) for kind in KINDS
    }
    result["other_file"] = _block(names, [s for s in scores if s.task.uses_other_file])
    result["per_reach"] = {
        where: _block(names, [s for s in scores if s.task.reach == where]) for where in REACHES
    }
    result["paired"] = paired = _paired(names, scores)
    tables = (_table(names, result), _reach_table(names, result), _paired_table(paired))
    result["table"] = "\n\n".join(t for t in tables if t)
    if keep_predictions:
        result["per_task"] = [_row(s) for s in scores]
    return result


def _block(names: list[str], scores: list[_Score]) -> dict[str, object]:
    tasks = {id(s.task) for s in scores}
    return {"samples": len(tasks), **_metrics(names, scores)}


def _metrics(names: list[str], scores: list[_Score]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name in names:
        mine = [s for s in scores if s.condition == name]
        metrics[f"n_{name}"] = len(mine)
        for metric in ("em", "es", "id"):
            metrics[f"{metric}_{name}"] = _mean([getattr(s, metric) for s in mine])
        metrics[f"tokens_{name}"] = _mean([s.result.prompt_tokens for s in mine])
        metrics[f"parse_rate_{name}"] = _parse_rate(mine)
    metrics["parse_rate"] = _parse_rate(scores)
    metrics["parse_samples"] = len({id(s.task) for s in scores if s.parses is not None})
    return metrics


PAIRED_AGAINST = ("none", "windows")
"""The conditions every other one is compared with position by position: no context, and the
similar windows other tools send (issue 16's two targets)."""


def _paired(names: list[str], scores: list[_Score]) -> dict[str, dict[str, dict[str, float]]]:
    """Per condition and reference: `wins` (positions it matches exactly and the reference
    does not), `losses` (the reverse), and `p`, the two-sided sign test's p-value of that
    split (McNemar's exact test). Over 200 positions two prompt shapes typically disagree on
    a few dozen, so an EM gap of a few points can be a coin's noise; `p` says how likely a
    split this lopsided is when neither shape is better. Only positions both scored count."""
    exact: dict[tuple[str, int], bool] = {(s.condition, id(s.task)): s.em > 0 for s in scores}
    references = [r for r in PAIRED_AGAINST if r in names]
    paired: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        # A reference is compared only with the references before it: none's row against
        # windows would mirror windows' row against none.
        mine = references[: references.index(name)] if name in references else references
        for reference in mine:
            wins = losses = 0
            for (condition, task), right in exact.items():
                other = exact.get((reference, task))
                if condition == name and other is not None and right != other:
                    wins, losses = (wins + 1, losses) if right else (wins, losses + 1)
            paired.setdefault(name, {})[reference] = {
                "wins": wins,
                "losses": losses,
                "p": round(sign_test(wins, losses), 4),
            }
    return paired


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven from fair coin
    flips (1.0 when there is no disagreement). Written out because it is one binomial sum;
    scipy would be a large dependency for it."""
    n, low = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(low + 1)) / 2**n)


def _reach_table(names: list[str], result: Mapping[str, object]) -> str:
    """Markdown: EM per condition by where the hidden line's names are (see `reach`)."""
    per_reach = result["per_reach"]
    assert isinstance(per_reach, dict)
    shown = [where for where in REACHES if per_reach[where]["samples"]]
    if not shown:
        return ""
    head = " | ".join(f"EM {where} ({per_reach[where]['samples']})" for where in shown)
    lines = [f"| condition | {head} |", "|---|" + "---:|" * len(shown)]
    for name in names:
        cells = " | ".join(f"{per_reach[where][f'em_{name}']:.1f}" for where in shown)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def _paired_table(paired: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Markdown: each condition's exact-match wins/losses against the references, with p."""
    references = sorted(
        {r for against in paired.values() for r in against}, key=PAIRED_AGAINST.index
    )
    if not references:
        return ""
    head = " | ".join(f"vs {r}: won / lost (p)" for r in references)
    lines = [f"| condition | {head} |", "|---|" + "---:|" * len(references)]
    for name, against in paired.items():
        cells = [
            f"{against[r]['wins']:.0f} / {against[r]['losses']:.0f} ({against[r]['p']:.2f})"
            if r in against
            else ""
            for r in references
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse_rate(scores: list[_Score]) -> float:
    """0-100: accepted suggestions that leave the file parsing, over the positions whose file
    parses to begin with."""
    return _mean([100.0 * s.parses for s in scores if s.parses is not None])


def _table(names: list[str], result: Mapping[str, object]) -> str:
    per_kind = result["per_kind"]
    other = result["other_file"]
    assert isinstance(per_kind, dict) and isinstance(other, dict)
    lines = [
        f"| condition | n | EM | ES | ID | EM {NEXT_LINE} | EM {MID_LINE} | EM other file "
        "| prompt tokens | parses % | p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        lines.append(
            f"| {name} | {result[f'n_{name}']} | {result[f'em_{name}']:.1f} "
            f"| {result[f'es_{name}']:.1f} | {result[f'id_{name}']:.1f} "
            f"| {per_kind[NEXT_LINE][f'em_{name}']:.1f} | {per_kind[MID_LINE][f'em_{name}']:.1f} "
            f"| {other[f'em_{name}']:.1f} | {result[f'tokens_{name}']:.0f} "
            f"| {result[f'parse_rate_{name}']:.1f} | {result[f'p50_ms_{name}']:.0f} |"
        )
    return "\n".join(lines)


def _row(score: _Score) -> dict[str, object]:
    task = score.task
    return {
        "task": task.id,
        "file": task.relative,
        "line": task.line,
        "column": task.column,
        "kind": task.kind,
        "uses_other_file": task.uses_other_file,
        "reach": task.reach,
        "condition": score.condition,
        "how": score.how,
        "prompt_sha256": score.result.prompt_sha256,
        "prompt_tokens": score.result.prompt_tokens,
        "context_files": score.result.context_files,
        "expected": task.expected,
        "prediction": score.prediction,
        "raw": score.result.raw,
        "generated_tokens": score.result.generated_tokens,
        "em": score.em,
        "es": round(score.es, 2),
        "id": round(score.id, 2),
        "parses": score.parses,
        "latency_ms": round(score.result.latency_ms, 2),
    }


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 2) if values else 0.0


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else 0.0
