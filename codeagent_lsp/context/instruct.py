"""Instruct requests (explain, and the code actions to come) built from the code at a line and
what the CodeGraph knows around it."""

from __future__ import annotations

from dataclasses import dataclass

from codeagent_lsp.codegraph import extract, languages
from codeagent_lsp.codegraph.model import Definition

SYSTEM = (
    "You are a senior software engineer explaining code to a colleague who is reading it for "
    "the first time. Be precise and brief. Answer in Markdown."
)
NEARBY_LINES = 10
"""Lines around the cursor explained when no definition encloses it."""


@dataclass(frozen=True)
class CodeAtLine:
    code: str
    language: str
    name: str
    """The enclosing definition's qualified name, "" for module-level code."""
    first_line: int


def code_at(text: str, path: str, line: int) -> CodeAtLine:
    """The innermost function, method or class around `line` (0-based), else nearby lines."""
    language = languages.language_for(path) or ""
    lines = text.split("\n")
    inner = _innermost(text, language, line) if language else None
    if inner is not None:
        span = inner.span
        code = "\n".join(lines[span.start_line : span.end_line + 1])
        return CodeAtLine(code, language, inner.qualified_name, span.start_line)
    start = max(0, line - NEARBY_LINES)
    code = "\n".join(lines[start : line + NEARBY_LINES + 1])
    return CodeAtLine(code, language, "", start)


def _innermost(text: str, language: str, line: int) -> Definition | None:
    facts = extract.extract(text.encode("utf-8", errors="surrogatepass"), language)
    holding = [
        d for d in facts.definitions
        if d.span.start_line <= line <= d.span.end_line and d.span.end_line > d.span.start_line
    ]
    return max(holding, key=lambda d: d.span.start_line, default=None)


def explain_request(
    target: CodeAtLine, path: str, related: list[tuple[str, str]]
) -> tuple[str, str]:
    """(system, user) messages asking to explain `target`, with the signatures it uses."""
    fence = target.language
    what = f"`{target.name}`" if target.name else "this code"
    parts = [
        f"Explain what {what} in `{path}` does: its purpose, inputs and outputs, side effects, "
        "and anything a reviewer should notice.",
    ]
    if related:
        used = "\n\n".join(f"# {p}\n{t}" for p, t in related)
        parts.append(f"Definitions it relies on, from other files:\n```{fence}\n{used}\n```")
    parts.append(f"```{fence}\n{target.code}\n```")
    return SYSTEM, "\n\n".join(parts)
