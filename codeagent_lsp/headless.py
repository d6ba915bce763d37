"""Headless jobs on the server's own pipeline (the Assistant), for scripts and CI."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from codeagent_lsp.assistant import Assistant, ModelUnavailable, PromptFile
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
