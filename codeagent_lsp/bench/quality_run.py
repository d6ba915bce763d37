"""`codeagent-lsp bench quality`: completion quality with and without repository context.

The repository is indexed once; for each sampled task the masked file is given to the index as
an open document's text (so its own masked line is not in the index), then the same model
completes it three times through the server's pipeline (Assistant + ContextBuilder), with no
context, with similar code windows only, and with the full context builder, all with the same
token budgets. The model's first line is compared with the hidden text.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from codeagent_lsp.assistant import Assistant, PromptFile
from codeagent_lsp.bench.quality import (
    Condition,
    Task,
    identifiers,
    run_quality_bench,
    sample_tasks,
)
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.assets import AssetIndex
from codeagent_lsp.context.builder import ContextBuilder, Mode
from codeagent_lsp.security.paths import PathPolicy
from codeagent_lsp.settings import Settings

CONDITIONS: tuple[Mode, ...] = ("none", "windows", "full")


async def run(
    settings: Settings,
    repo: Path,
    samples: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    say = progress or (lambda _m: None)
    root = repo.expanduser().resolve()
    index = WorkspaceIndex([(root.name, root)], settings.codegraph)
    single_line = dataclasses.replace(settings.completion, multiline="never", reuseSuggestion=False)
    assistant = Assistant(dataclasses.replace(settings, completion=single_line))
    try:
        say(f"indexing {root} ...")
        summary = index.index_all()
        say(f"{summary.files} files, {summary.symbols} symbols")
        info = await assistant.load()
        tasks = sample_tasks(root, samples, seed)
        for task in tasks:
            task.uses_other_file = _uses_other_file(index, task)
        assets = AssetIndex([(root.name, root)], PathPolicy(deny=settings.codegraph.exclude))
        assets.refresh()
        conditions: dict[str, Condition] = {
            mode: _condition(assistant, index, assets, mode) for mode in CONDITIONS
        }
        result = await run_quality_bench(tasks, conditions, progress=say)
    finally:
        assistant.close()
        index.close()
    result["model"], result["device"] = info.name, info.device
    result["budgets"] = {
        "prefix": settings.completion.prefixTokens,
        "suffix": settings.completion.suffixTokens,
        "context": settings.completion.contextTokens,
        "total": settings.completion.totalTokens,
    }
    return result


def _condition(
    assistant: Assistant, index: WorkspaceIndex, assets: AssetIndex, mode: Mode
) -> Condition:
    builder = ContextBuilder(index, assets, mode=mode)

    async def complete(task: Task) -> tuple[str, float]:
        text = task.prefix_text + task.suffix_text
        key = f"bench-{mode}:{task.path}"
        index.document_changed(task.path, text)  # the masked line is not in the index
        builder.forget(key)
        assistant.context = builder.context_files
        started = time.perf_counter()
        try:
            suggestion = await assistant.complete(
                key,
                text,
                len(task.prefix_text),
                PromptFile(index.roots[0][0], task.relative, task.path),
            )
        finally:
            index.document_closed(task.path)
            assistant.forget(key)
        return suggestion.text, (time.perf_counter() - started) * 1000

    return complete


def _uses_other_file(index: WorkspaceIndex, task: Task) -> bool:
    """The hidden text names something defined in another file of the repository."""
    for name in identifiers(task.expected):
        for symbol in index.store.definitions(name, limit=4):
            if symbol.path != task.relative:
                return True
    return False
