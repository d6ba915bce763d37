"""`codeagent-lsp bench quality`: completion quality with and without repository context.

The repository is indexed once; for each sampled task the masked file is given to the index as
an open document's text (so its own masked line is not in the index), then the same model
completes it through the server's pipeline (Assistant + ContextBuilder) under each condition
(a ContextBuilder mode: no context, one source, or all of them), with the same token budgets.
The assistant runs as users get it (the settings' `completion.multiline`, "auto" by
default: one line or several, as post-processing decides); the suggestion's first line is
compared with the hidden text's, and the whole suggestion is accepted and parsed. Results go
to a results file, so a rerun sends only the prompts not answered before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from codeagent_lsp.assistant import Assistant, PromptFile
from codeagent_lsp.bench.quality import (
    REACHES,
    Completion,
    Condition,
    Prepared,
    Task,
    identifiers,
    reach,
    run_quality_bench,
    sample_tasks,
)
from codeagent_lsp.bench.results import ResultsFile, prompt_sha256
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.assets import AssetIndex
from codeagent_lsp.context.builder import MODES, ContextBuilder
from codeagent_lsp.security.paths import PathPolicy
from codeagent_lsp.settings import Settings

CONDITIONS = tuple(MODES)
"""none, windows, definitions, signatures, windows+definitions, assets, full."""
# Conditions measured only at positions where their source finds something: asset context is
# meant for code that touches configuration or schemas, and elsewhere it would equal "none".
_ONLY_WHERE_FOUND = frozenset({"assets"})


def parse_conditions(text: str | None) -> list[str]:
    """`a,b,...` -> condition names, all of CONDITIONS for None; ValueError names the unknown
    ones and lists the known."""
    return _parse_names(text, CONDITIONS, "conditions")


def parse_reaches(text: str | None) -> list[str]:
    """`a,b,...` -> names from REACHES, all for None; ValueError as parse_conditions."""
    return _parse_names(text, REACHES, "reaches")


def _parse_names(text: str | None, known: Sequence[str], what: str) -> list[str]:
    if text is None:
        return list(known)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


async def run(
    settings: Settings,
    repos: Sequence[Path],
    samples: int,
    seed: int,
    *,
    results: Path,
    conditions: Sequence[str] = CONDITIONS,
    reaches: Sequence[str] = REACHES,
    max_minutes: float | None = None,
    progress: Callable[[str], None] | None = None,
    keep_predictions: bool = False,
) -> dict[str, object]:
    """The benchmark's result over `samples` positions of each repository in `repos`
    (quality.run_quality_bench's keys, plus `model`, `device`, `budgets`, `repos` and
    `results`, the results file). Each repository is indexed on its own, so a position gets
    the prompt it gets when its repository is benchmarked alone; with more than one, task ids
    start with the repository's folder name. Raises ModelUnavailable without a model,
    OSError when the results file cannot be read or written, ValueError for two repositories
    of the same folder name; `conditions` are names from CONDITIONS (parse_conditions checks
    them). Only sampled positions of a reach in `reaches` (see quality.reach) are run: the
    positions that need another file, as CrossCodeEval samples them, are `repository`."""
    say = progress or (lambda _m: None)
    roots = repo_roots(repos)
    stored = ResultsFile(results)
    # Every prompt asks the model: an answer typed ahead from the last one measures nothing.
    completion = dataclasses.replace(settings.completion, reuseSuggestion=False)
    assistant = Assistant(dataclasses.replace(settings, completion=completion))
    with contextlib.ExitStack() as stack:
        stack.callback(assistant.close)
        info = await assistant.load()
        tasks: list[Task] = []
        by_root: dict[Path, dict[str, Condition]] = {}
        root_of: dict[int, Path] = {}  # id(task) -> its repository
        for root in roots:
            index = WorkspaceIndex([(root.name, root)], settings.codegraph)
            stack.callback(index.close)
            say(f"indexing {root} ...")
            summary = index.index_all()
            say(f"{summary.files} files, {summary.symbols} symbols; {len(stored)} stored results")
            found = sample_tasks(root, samples, seed)
            for task in found:
                task.uses_other_file = _uses_other_file(index, task)
                task.label = f"{root.name}/" if len(roots) > 1 else ""
                task.reach = await _reach(assistant, index, task)
                root_of[id(task)] = root
            tasks += [task for task in found if task.reach in reaches]
            assets = AssetIndex([(root.name, root)], PathPolicy(deny=settings.codegraph.exclude))
            assets.refresh()
            by_root[root] = {
                name: _condition(assistant, index, assets, name) for name in conditions
            }
        result = await run_quality_bench(
            tasks,
            {name: _dispatch(by_root, root_of, name) for name in conditions},
            stored,
            assistant.model_sha256 or info.name,
            finish=lambda task, found: assistant.finish(
                found.raw, task.prefix_text, task.suffix_text, generated=found.generated_tokens
            ),
            progress=say,
            keep_predictions=keep_predictions,
            max_seconds=None if max_minutes is None else max_minutes * 60,
        )
    result["model"], result["device"] = info.name, info.device
    result["budgets"] = {
        "prefix": settings.completion.prefixTokens,
        "suffix": settings.completion.suffixTokens,
        "context": settings.completion.contextTokens,
        "total": settings.completion.totalTokens,
    }
    result["repos"] = [str(root) for root in roots]
    result["results"] = str(results)
    return result


def repo_roots(repos: Sequence[Path]) -> list[Path]:
    """The repositories' resolved folders; ValueError when two share a folder name (their
    task ids would clash in the results file)."""
    roots = [repo.expanduser().resolve() for repo in repos]
    names = [root.name for root in roots]
    clashing = sorted({name for name in names if names.count(name) > 1})
    if clashing:
        raise ValueError(f"repositories with the same folder name {clashing}: copy one elsewhere")
    return roots


def _dispatch(
    by_root: dict[Path, dict[str, Condition]], root_of: dict[int, Path], name: str
) -> Condition:
    """Condition `name` run by the task's own repository's index."""

    async def prepare(task: Task) -> Prepared | None:
        return await by_root[root_of[id(task)]][name](task)

    return prepare


def _condition(
    assistant: Assistant, index: WorkspaceIndex, assets: AssetIndex, mode: str
) -> Condition:
    builder = ContextBuilder(index, assets, mode=mode)

    async def prepare(task: Task) -> Prepared | None:
        text = task.prefix_text + task.suffix_text
        offset = len(task.prefix_text)
        key = f"bench-{mode}:{task.path}"
        where = PromptFile(index.roots[0][0], task.relative, task.path)
        index.document_changed(task.path, text)  # the masked line is not in the index
        builder.forget(key)
        assistant.forget(key)
        assistant.context = builder.context_files
        try:
            request = await assistant.prompt(key, text, offset, where)
        finally:
            index.document_closed(task.path)
        files = len(request.fim.context_files) if request.fim else 0
        if mode in _ONLY_WHERE_FOUND and not files:
            return None

        async def complete() -> Completion:
            started = time.perf_counter()
            try:
                suggestion = await assistant.complete(key, text, offset, where, request)
            finally:
                assistant.forget(key)
            latency = (time.perf_counter() - started) * 1000
            record = suggestion.record
            return Completion(
                suggestion.raw, latency, record.prompt_tokens, record.generated_tokens
            )

        return Prepared(prompt_sha256(request), files, complete)

    return prepare


async def _reach(assistant: Assistant, index: WorkspaceIndex, task: Task) -> str:
    """The task's reach, from the excerpt of the document its prompt holds (the same under
    every condition: the context sources do not move it)."""
    text = task.prefix_text + task.suffix_text
    key = f"bench-reach:{task.path}"
    assistant.context = None
    try:
        request = await assistant.prompt(
            key, text, len(task.prefix_text), PromptFile(None, task.relative, task.path)
        )
    finally:
        assistant.forget(key)
    shown = request.fim.prefix + request.fim.suffix if request.fim else text
    return reach(task.expected, shown, text, lambda name: _elsewhere(index, task, name))


def _uses_other_file(index: WorkspaceIndex, task: Task) -> bool:
    """The hidden text names something defined in another file of the repository."""
    return any(_elsewhere(index, task, name) for name in identifiers(task.expected))


def _elsewhere(index: WorkspaceIndex, task: Task, name: str) -> bool:
    """`name` is defined in a file of the repository other than the task's."""
    return any(s.path != task.relative for s in index.store.definitions(name, limit=4))
