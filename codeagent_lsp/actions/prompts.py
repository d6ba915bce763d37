"""The code actions' prompts (explain, docstring, fix; tests in `testgen`), each beside the
parsing of its answer, built from the code at a line (`codegraph.extract.code_at`) and what
the CodeGraph knows around it."""

from __future__ import annotations

from codeagent_lsp.codegraph.extract import CodeAtLine

SYSTEM = (
    "You are a senior software engineer explaining code to a colleague who is reading it for "
    "the first time. Be precise and brief. Answer in Markdown."
)


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


def docstring_request(target: CodeAtLine, path: str) -> tuple[str, str]:
    """(system, user) asking for the text of a docstring for `target`, nothing else."""
    user = (
        f"Write the documentation comment for `{target.name}` in `{path}`: one summary line, "
        "then the arguments and the return value if it has them. Reply with the text only: "
        "no quotes, no comment markers, no code.\n\n"
        f"```{target.language}\n{target.code}\n```"
    )
    return SYSTEM, user


def fix_request(
    lines: list[str], first_line: int, target: CodeAtLine, path: str, message: str
) -> tuple[str, str]:
    """(system, user) asking to rewrite the given lines so that `message` no longer holds;
    the enclosing definition is shown so the model knows the names in scope."""
    language = target.language
    broken = "\n".join(lines)
    user = (
        f"This {language} code from `{path}` has a problem on lines "
        f"{first_line + 1}-{first_line + len(lines)}: {message}\n\n"
        f"```{language}\n{target.code}\n```\n\n"
        f"Write a corrected version of just these lines, keeping their indentation:\n"
        f"```{language}\n{broken}\n```\n"
        f"Reply with the corrected lines in one ```{language} block and nothing else."
    )
    return SYSTEM, user


def fix_replacement(answer: str, target: CodeAtLine, first: int, last: int) -> str | None:
    """The new text for lines first..last from the model's answer: small models often rewrite
    the whole definition; then only the lines at the diagnostic's place are taken, so the edit
    stays minimal."""
    code = fenced_code(answer)
    if code is None:
        return None
    rows = code.split("\n")
    wanted = last - first + 1
    if len(rows) == wanted:
        return code
    whole = target.code.split("\n")
    inside = target.first_line <= first and last < target.first_line + len(whole)
    if len(rows) == len(whole) and inside:
        offset = first - target.first_line
        return "\n".join(rows[offset : offset + wanted])
    return None


def fenced_code(answer: str) -> str | None:
    """The first fenced code block of a Markdown answer, else None."""
    return next(iter(fenced_blocks(answer)), None)


def fenced_blocks(answer: str) -> list[str]:
    """The fenced code blocks of a Markdown answer; the last runs to the end of the answer when
    the token limit cut it before its closing fence."""
    blocks, position = [], 0
    while (start := answer.find("```", position)) >= 0:
        body_start = answer.find("\n", start)
        if body_start < 0:
            break
        end = answer.find("```", body_start + 1)
        blocks.append(answer[body_start + 1 : end if end >= 0 else len(answer)].rstrip("\n"))
        if end < 0:
            break
        position = end + 3
    return blocks


def format_docstring(text: str, target: CodeAtLine, lines: list[str]) -> tuple[int, str] | None:
    """Where to insert the documentation and what: (0-based line, text with newline). Python:
    a docstring as the body's first statement; other languages: a comment block above."""
    summary = text.strip().strip('"').strip("'").strip()
    if not summary:
        return None
    head = lines[target.first_line]
    indent = head[: len(head) - len(head.lstrip())]
    if target.language == "python":
        body = _python_body_line(lines, target.first_line)
        if body is None:
            return None
        inner = lines[body][: len(lines[body]) - len(lines[body].lstrip())] or indent + "    "
        quoted = summary.replace('"""', "'''")
        doc = "\n".join(inner + row if row else "" for row in quoted.split("\n"))
        return body, f'{inner}"""{doc.lstrip()}\n{inner}"""\n'
    # `//` is a comment in every other supported language (JS/TS, Go, Rust, Java, C, C++).
    comment = "\n".join(f"{indent}// {row}".rstrip() for row in summary.split("\n"))
    return target.first_line, comment + "\n"


def _python_body_line(lines: list[str], first: int) -> int | None:
    """The first line after the signature (which may span lines, ending with ':')."""
    for row in range(first, min(len(lines), first + 30)):
        if lines[row].rstrip().endswith(":"):
            return row + 1 if row + 1 < len(lines) else None
    return None
