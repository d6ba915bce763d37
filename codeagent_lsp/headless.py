"""Headless jobs on the server's own pipeline (the Assistant), for scripts and CI."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from codeagent_lsp.assistant import Assistant, ModelUnavailable, PromptFile
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.instruct import code_at, explain_request
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
            assistant.complete(
                path.resolve().as_uri(), text, offset, PromptFile(path=path.name)
            )
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


def explain_at(location: str, root: Path | None, settings: Settings, *, as_json: bool) -> int:
    """`codeagent-lsp explain FILE:LINE`: Markdown explaining the definition around LINE, with
    the signatures it uses from the repository (indexed under `root`, default: the nearest
    folder holding .git, else the file's folder)."""
    try:
        path_text, _, line_text = location.rpartition(":")
        if not (path_text and line_text.isdigit() and int(line_text) >= 1):
            raise ValueError(f"expected FILE:LINE with a positive line, got {location!r}")
        path = Path(path_text).resolve()
        text = path.read_text(encoding="utf-8", errors="replace")
    except (ValueError, OSError) as exc:
        print(f"codeagent-lsp: {exc}", file=sys.stderr)
        return 2
    line = min(int(line_text), text.count("\n") + 1) - 1
    target = code_at(text, path.name, line)
    related = _related(path, text, line, root or _repository_root(path), settings)
    system, user = explain_request(target, path.name, related)
    assistant = Assistant(settings)
    try:
        generation = asyncio.run(assistant.instruct(path.as_uri(), system, user))
    except ModelUnavailable as exc:
        print(f"codeagent-lsp: {exc}", file=sys.stderr)
        return 2
    finally:
        assistant.close()
    if as_json:
        print(json.dumps({"explanation": generation.text, "target": target.name,
                          "record": generation.record.to_json()}))
    else:
        print(generation.text.strip())
    return 0


def _repository_root(path: Path) -> Path:
    for folder in path.parents:
        if (folder / ".git").exists():
            return folder
    return path.parent


def _related(
    path: Path, text: str, line: int, root: Path, settings: Settings
) -> list[tuple[str, str]]:
    index = WorkspaceIndex([(root.name, root)], settings.codegraph)
    try:
        index.index_all()
        snippets = index.related(path, text, line, 600, lambda s: len(s) // 4 + 1)
    finally:
        index.close()
    return [(s.path, s.text) for s in snippets if s.reason != "ranked"]
