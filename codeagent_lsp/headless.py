"""Headless jobs on the server's own pipeline (the Assistant), for scripts and CI, and
`codeagent-lsp index` with its progress bar (codegraph/ itself prints nothing)."""

from __future__ import annotations

import asyncio
import difflib
import json
import sys
import time
from pathlib import Path

from codeagent_lsp.actions import pipeline
from codeagent_lsp.assistant import Assistant, ModelUnavailable, PromptFile
from codeagent_lsp.codegraph.extract import definition_line
from codeagent_lsp.codegraph.indexer import Indexer, default_workers
from codeagent_lsp.codegraph.store import default_db_path, open_store
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.settings import Settings


def parse_location(location: str) -> tuple[Path, int, int]:
    """FILE:LINE:COL with 1-based line and column (in characters), as compilers print them."""
    path, line, col = ["", "", "", *location.rsplit(":", 2)][-3:]
    if not (path and line.isdigit() and col.isdigit()) or int(line) < 1 or int(col) < 1:
        raise ValueError(f"expected FILE:LINE:COL with positive numbers, got {location!r}")
    return Path(path), int(line), int(col)


def offset_in(text: str, line: int, col: int) -> int:
    lines = text.split("\n")
    if line > len(lines):
        raise ValueError(f"line {line} is past the end of the file ({len(lines)} lines)")
    column = min(col - 1, len(lines[line - 1]))
    return sum(len(x) + 1 for x in lines[: line - 1]) + column


def complete_at(location: str, settings: Settings, *, as_json: bool) -> int:
    try:
        path, line, col = parse_location(location)
        text = path.read_text(encoding="utf-8", errors="replace")
        offset = offset_in(text, line, col)
    except (ValueError, OSError) as exc:
        print(f"codeagent-lsp: {exc}", file=sys.stderr)
        return 2
    assistant = Assistant(settings)
    try:
        suggestion = asyncio.run(
            assistant.complete(path.resolve().as_uri(), text, offset, PromptFile(path=path.name))
        )
    except ModelUnavailable as exc:
        print(f"codeagent-lsp: {exc}", file=sys.stderr)
        return 2
    finally:
        info = assistant.info
        assistant.close()
    record = suggestion.record.to_json()
    if as_json:
        model = {"name": info.name, "device": info.device} if info else None
        print(json.dumps({"suggestion": suggestion.text, "record": record, "model": model}))
    else:
        print(suggestion.text)
        print(
            f"-- {record['promptTokens']} prompt tokens, {record['evaluatedTokens']} evaluated, "
            f"{record['generatedTokens']} generated; first token {record['ttftMs']:.0f} ms, "
            f"total {record['totalMs']:.0f} ms on {info.device if info else '?'}",
            file=sys.stderr,
        )
    return 0


def _file_and_line(location: str) -> tuple[Path, str, int]:
    """FILE:LINE (1-based) or FILE:NAME (a function, method or class, `Class.method` too) to
    the resolved path, its text and a 0-based line."""
    path_text, _, where = location.rpartition(":")
    if not (path_text and where):
        raise ValueError(f"expected FILE:LINE or FILE:NAME, got {location!r}")
    path = Path(path_text).resolve()
    text = path.read_text(encoding="utf-8", errors="replace")
    if where.isdigit() and int(where) >= 1:
        return path, text, min(int(where), text.count("\n") + 1) - 1
    line = definition_line(text, str(path), where)
    if line is None:
        raise ValueError(f"no definition named {where!r} in {path}")
    return path, text, line


def explain_at(location: str, root: Path | None, settings: Settings, *, as_json: bool) -> int:
    """`codeagent-lsp explain FILE:LINE`: Markdown explaining the definition around LINE, with
    the signatures it uses from the repository (indexed under `root`, default: the nearest
    folder holding .git, else the file's folder)."""

    async def job(assistant: Assistant, path: Path, text: str, line: int) -> dict[str, object]:
        repository = root or repository_root(path)
        index = WorkspaceIndex([(repository.name, repository)], settings.codegraph)
        try:
            await asyncio.to_thread(index.index_all)
            title, markdown = await pipeline.explain(
                assistant, index, path, text, line, path.as_uri()
            )
        finally:
            index.close()
        return {"title": title, "explanation": markdown}

    return _run_action(location, settings, job, as_json, "explanation")


def fix_at(location: str, message: str, settings: Settings, *, as_json: bool) -> int:
    """`codeagent-lsp fix FILE:LINE --message M`: a unified diff of the minimal fix, exit 1
    when no fix that parses was found."""

    async def job(assistant: Assistant, path: Path, text: str, line: int) -> dict[str, object]:
        edit = await pipeline.fix(assistant, path, text, line, line, message, path.as_uri())
        if edit is None:
            return {"diff": None}
        fixed = pipeline.apply(text, edit)
        diff = difflib.unified_diff(
            text.splitlines(True), fixed.splitlines(True), f"a/{path.name}", f"b/{path.name}"
        )
        return {"diff": "".join(diff)}

    return _run_action(location, settings, job, as_json, "diff")


def tests_for(location: str, settings: Settings, *, write: bool, as_json: bool) -> int:
    """`codeagent-lsp tests FILE:LINE`: tests for the function around LINE in the project's
    framework, printed or (--write) added to the test file the project uses."""

    async def job(assistant: Assistant, path: Path, text: str, line: int) -> dict[str, object]:
        root = repository_root(path)
        proposal = await pipeline.tests(assistant, root, path, text, line, path.as_uri())
        if proposal is None:
            return {"tests": None}
        test_file = proposal.plan.file
        if write:
            test_file.parent.mkdir(parents=True, exist_ok=True)
            test_file.write_text(proposal.after, encoding="utf-8")
        return {
            "tests": proposal.code,
            "file": str(test_file),
            "framework": proposal.plan.framework,
        }

    return _run_action(location, settings, job, as_json, "tests")


def _run_action(location: str, settings: Settings, job, as_json: bool, key: str) -> int:
    try:
        path, text, line = _file_and_line(location)
    except (ValueError, OSError) as exc:
        print(f"codeagent-lsp: {exc}", file=sys.stderr)
        return 2
    assistant = Assistant(settings)
    try:
        result = asyncio.run(job(assistant, path, text, line))
    except ModelUnavailable as exc:
        print(f"codeagent-lsp: {exc}", file=sys.stderr)
        return 2
    finally:
        assistant.close()
    if as_json:
        print(json.dumps(result))
    elif result[key] is not None:
        print(str(result[key]).rstrip())
    else:
        print(f"codeagent-lsp: no {key} that parses was found", file=sys.stderr)
    return 0 if result[key] is not None else 1


def repository_root(path: Path) -> Path:
    """The nearest folder above `path` holding .git, else the file's folder."""
    for folder in path.parents:
        if (folder / ".git").exists():
            return folder
    return path.parent


def index_command(path: Path, db: Path | None, progress_to_stderr: bool) -> int:
    """`codeagent-lsp index PATH`: index one folder into its workspace database (or `db`),
    a progress bar on stderr, a summary line on stdout."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        print(f"codeagent-lsp index: not a folder: {path}", file=sys.stderr)
        return 2
    store = open_store(db if db is not None else default_db_path(root))
    if store.status.state in ("rebuilt", "memory"):
        print(f"codeagent-lsp index: {store.status.reason}", file=sys.stderr)
    try:
        bar = _ProgressBar() if progress_to_stderr else None
        indexer = Indexer(store, [(root.name, root)], workers=default_workers())
        summary = indexer.index_all(progress=bar)
        if bar is not None:
            bar.finish()
    finally:
        store.close()
    print(
        f"{summary.files} files, {summary.symbols} symbols, {summary.references} references"
        f" in {summary.seconds:.1f}s ({summary.parsed} parsed, {summary.unchanged} unchanged,"
        f" {summary.removed} removed, {summary.skipped} skipped)"
    )
    return 0


class _ProgressBar:
    WIDTH = 30

    def __init__(self) -> None:
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int, path: str) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return  # redrawing every file would cost more than some files take to parse
        self._last = now
        filled = self.WIDTH * done // max(total, 1)
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} {path[-40:]}"
        sys.stderr.write(f"\r{line:<90}")
        sys.stderr.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
