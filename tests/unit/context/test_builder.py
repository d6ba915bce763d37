"""The context builder: budget to the token, stable while typing in a definition, no leaks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from codeagent_lsp.assistant import Assistant, PromptFile
from codeagent_lsp.codegraph import extract
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.assets import AssetIndex
from codeagent_lsp.context.builder import (
    ELISION,
    WINDOW_QUERY_LINES,
    WINDOWS,
    ContextBuilder,
    python_outline,
)
from codeagent_lsp.security.paths import PathPolicy
from codeagent_lsp.settings import CodegraphSettings, CompletionSettings, EngineSettings, Settings


def count(path: str, text: str) -> int:
    """As a multi-file template prices a context file (a separator token, path, text)."""
    return 1 + (len(f"{path}\n{text}\n") // 4 + 1)


def cursor_in_describe(root: Path) -> tuple[Path, str, int]:
    path = root / "app.py"
    text = path.read_text()
    return path, text, text.index('    return f"{c.name}') + 4


@pytest.mark.parametrize("budget", [0, 30, 120, 400, 1600])
def test_context_stays_within_the_budget(python_index, budget):
    index, root = python_index
    path, text, offset = cursor_in_describe(root)
    files = ContextBuilder(index).context_files("k", path, text, offset, budget, count)
    assert sum(count(p, t) for p, t in files) <= budget
    if budget >= 400:
        assert any("class Circle(Shape)" in t for _, t in files)


def test_context_is_kept_while_typing_in_the_same_function(python_index):
    index, root = python_index
    path, text, offset = cursor_in_describe(root)
    builder = ContextBuilder(index)
    first = builder.context_files("k", path, text, offset, 400, count)
    for typed in ("c", "c.", "c.na", "c.name + str(len("):
        edited = text[:offset] + typed + text[offset:]
        again = builder.context_files("k", path, edited, offset + len(typed), 400, count)
        assert again is first
    main_at = text.index("    print(rect_area")
    elsewhere = builder.context_files("k", path, text, main_at + 4, 400, count)
    assert elsewhere is not first


def test_text_already_in_the_document_is_not_repeated(python_index):
    index, root = python_index
    path, text, offset = cursor_in_describe(root)
    plain = ContextBuilder(index).context_files("k", path, text, offset, 400, count)
    assert any("class Circle(Shape)" in t for _, t in plain)
    geometry = (root / "shapes" / "geometry.py").read_text()
    combined = text + "\n" + geometry  # as if the file held geometry's code itself
    files = ContextBuilder(index).context_files("k", path, combined, offset, 400, count)
    assert not any("class Circle(Shape)" in t for _, t in files)


def test_masked_text_does_not_leak_through_the_index(python_index):
    index, root = python_index
    path = root / "shapes" / "geometry.py"
    original = path.read_text()
    hidden = "return 2 * self.radius"
    masked = original.replace(hidden, "")
    index.document_changed(path, masked)  # the benchmark's way: the masked file as open text
    offset = masked.index("    @property") + 4
    line = masked.count("\n", 0, offset)
    around = range(line, line + 1)  # the document's own windows come in too
    for mode, excerpt in (("windows", None), ("full", None), ("windows", around)):
        files = ContextBuilder(index, mode=mode).context_files(
            "k", path, masked, offset, 2000, count, excerpt
        )
        assert files  # there is context ...
        assert all(hidden not in snippet for _, snippet in files)  # ... without the answer


def test_no_context_mode_and_no_index(python_index):
    index, root = python_index
    path, text, offset = cursor_in_describe(root)
    none = ContextBuilder(index, mode="none")
    assert none.context_files("k", path, text, offset, 400, count) == []
    assert ContextBuilder(None).context_files("k", path, text, offset, 400, count) == []


def _lines(files: list[tuple[str, str]]) -> set[str]:
    """The context's code lines (elision marks left out)."""
    return {
        line
        for _path, text in files
        for line in text.split("\n")
        if line.strip() not in ("", ELISION)
    }


def test_each_ablation_mode_draws_on_its_own_sources(python_index):
    index, root = python_index
    path, text, offset = cursor_in_describe(root)

    def context(mode: str) -> list[tuple[str, str]]:
        return ContextBuilder(index, mode=mode).context_files("k", path, text, offset, 4000, count)

    line = text.count("\n", 0, offset)
    cost = lambda snippet: count("", snippet)  # noqa: E731
    definitions = index.related(path, text, line, 4000, cost, ["definition"])
    signatures = index.related(path, text, line, 4000, cost, ["import"])
    for mode, snippets in (("definitions", definitions), ("signatures", signatures)):
        held = "\n".join(t for _, t in context(mode))
        assert snippets and all(s.definition and s.definition.signature in held for s in snippets)
    assert any("class Circle(Shape)" in t for _, t in context("definitions"))
    windows = _lines(context("windows"))
    both = _lines(context("windows+definitions"))
    assert both <= windows | _lines(context("definitions"))
    assert both & windows and both - windows  # each source is there
    assert context("none") == [] and context("assets") == []  # no asset index given
    assert _lines(context("full")) >= _lines(context("definitions"))


def test_api_schemas_come_in_and_secrets_never_do(tmp_path: Path):
    root = tmp_path / "service"
    root.mkdir()
    (root / "openapi.yaml").write_text(
        "openapi: 3.0.0\ninfo:\n  title: Users\n  version: '1'\npaths:\n  /users/{id}:\n"
        "    get:\n      operationId: getUser\n      summary: Fetch one user by id\n"
        "      responses:\n        '200':\n          description: the user\n"
    )
    (root / ".env").write_text("API_TOKEN=canary-5e1f0c9a7d\n")
    (root / "secrets.py").write_text("TOKEN = 'canary-5e1f0c9a7d'\n")
    client = root / "client.py"
    client.write_text(
        'import requests\n\n\ndef get_user(user_id):\n    url = f"/users/{user_id}"\n    \n'
    )
    index = WorkspaceIndex([("service", root)], CodegraphSettings(cacheDir=str(tmp_path / "db")))
    index.index_all()
    assets = AssetIndex([("service", root)], PathPolicy())
    assets.refresh()
    try:
        text = client.read_text()
        files = ContextBuilder(index, assets).context_files(
            "k", client, text, len(text) - 1, 600, count
        )
        assert not index.store.file_info("service", "secrets.py")  # denied: never indexed
    finally:
        index.close()
    joined = "\n".join(f"{p}\n{t}" for p, t in files)
    assert "openapi.yaml" in joined and "getUser" in joined
    assert "canary-5e1f0c9a7d" not in joined


def _stdlib_python_files() -> list[Path]:
    import asyncio
    import email

    return sorted(p for m in (asyncio, email) for p in Path(m.__file__).parent.rglob("*.py"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # escapes as the docstrings spell them
@pytest.mark.parametrize("path", _stdlib_python_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_an_outline_of_real_declarations_is_python_in_source_order(path: Path):
    """Context files are laid out as a stub file the model could have read: every declaration
    (methods under their classes, with or without the class itself) parses, in source order."""
    facts = extract.extract(path.read_bytes(), "python")
    whole = sorted(
        (d for d in facts.definitions if not d.signature.endswith("…")),
        key=lambda d: d.span.start_line,
    )
    for definitions in (whole, [d for d in whole if d.kind != "class"], whole[::3]):
        outline = python_outline(definitions)
        ast.parse("\n".join(outline))
        at = -1
        for definition in definitions:  # each one, after the one before it
            shown = (definition.signature, f"{definition.name} = ...")  # a value cut short
            at = next(
                i
                for i in range(at + 1, len(outline))
                if outline[i].strip() in shown
                or outline[i].strip().startswith(f"{definition.signature}:")
            )


def test_the_most_relevant_context_comes_last_and_windows_keep_the_baseline_shape(python_index):
    index, root = python_index
    path, text, offset = cursor_in_describe(root)
    line = text.count("\n", 0, offset)
    full = ContextBuilder(index, mode="full").context_files("k", path, text, offset, 4000, count)
    definitions = index.related(path, text, line, 4000, lambda s: count("", s), ["definition"])
    assert full[-1][0] == definitions[0].path  # the declarations of the names at the cursor
    query = "\n".join(text[:offset].split("\n")[-WINDOW_QUERY_LINES:])
    hits = index.similar_windows(query, WINDOWS, exclude=index.locate(path))
    windows = ContextBuilder(index, mode="windows").context_files(
        "k", path, text, offset, 4000, count
    )
    assert [p for p, _ in windows] == list(dict.fromkeys(hit.path for hit in hits))
    for file, shown in windows:  # each hit, and nothing else but elision marks
        mine = sorted((h for h in hits if h.path == file), key=lambda h: h.start_line)
        assert shown.replace(ELISION + "\n", "") == "\n".join(h.text.strip("\n") for h in mine)


def _windowed(tmp_path: Path, files: dict[str, str]) -> tuple[WorkspaceIndex, Path]:
    root = tmp_path / "windowed"
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    index = WorkspaceIndex([("w", root)], CodegraphSettings(cacheDir=str(tmp_path / "db")))
    index.index_all()
    return index, root


def _rows(first: int, count: int, word: str = "filler") -> str:
    """Lines `first`..`first + count - 1` of a file, each naming its number and `word`."""
    return "".join(f"{word}_{i} = {i}\n" for i in range(first, first + count))


def test_windows_of_one_file_come_in_file_order_with_the_gaps_marked(tmp_path: Path):
    # Two hits in lib.py at lines 40-59 and 0-19 (BM25 ranks 40 first: it says the word more
    # often) and one in far.py that starts at line 20: only a window that follows on from the
    # text above it goes unmarked.
    lib = _rows(0, 18) + "frobnicate(1)\nfrobnicate(2)\n" + _rows(20, 20) + "frobnicate(3)\n" * 20
    far = _rows(0, 20) + "frobnicate(4)\n" + _rows(21, 19)
    index, root = _windowed(tmp_path, {"lib.py": lib, "far.py": far, "main.py": "frobnicate(0)\n"})
    try:
        main = root / "main.py"
        files = dict(
            ContextBuilder(index, mode="windows").context_files(
                "k", main, "frobnicate(0)\n", 14, 4000, count
            )
        )
    finally:
        index.close()
    lib_rows = lib.split("\n")
    assert files["lib.py"] == "\n".join([*lib_rows[0:20], ELISION, *lib_rows[40:60]])
    assert files["far.py"] == "\n".join([ELISION, *far.split("\n")[20:40]])


@pytest.mark.parametrize(
    ("excerpt", "from_itself"),
    [(None, []), (range(0, 80), []), (range(50, 80), [0]), (range(20, 60), [0, 70])],
)
def test_the_document_s_own_windows_come_only_from_outside_the_excerpt(
    tmp_path: Path, excerpt: range | None, from_itself: list[int]
):
    text = "frobnicate(0)\n" + _rows(1, 69) + "frobnicate(70)\n" + _rows(71, 8) + "frobnicate(\n"
    index, root = _windowed(tmp_path, {"main.py": text, "other.py": "frobnicate(9)\n"})
    main = root / "main.py"
    try:
        files = dict(
            ContextBuilder(index, mode="windows").context_files(
                "k", main, text, len(text) - 1, 4000, count, excerpt
            )
        )
    finally:
        index.close()
    rows = text.split("\n")
    assert files["other.py"] == "frobnicate(9)"
    shown = files.get("main.py", "").split("\n")
    assert [i for i in (0, 70) if rows[i] in shown] == from_itself
    assert not set(shown) & {rows[i] for i in excerpt or range(len(rows)) if rows[i]}


async def test_the_assistant_s_prompt_gets_the_document_s_windows_from_outside_its_excerpt(
    tmp_path: Path, tiny_model: Path
):
    """Through the completion pipeline: the prompt holds the excerpt around the cursor, and
    a window of the same file far above it comes in as context; none it already holds."""
    text = "frobnicate(0)\n" + _rows(1, 199) + "frobnicate(\n"
    index, root = _windowed(tmp_path, {"main.py": text})
    completion = CompletionSettings(prefixTokens=64, suffixTokens=16)
    settings = Settings(
        model=str(tiny_model), engine=EngineSettings(threads=1), completion=completion
    )
    assistant = Assistant(settings)
    assistant.context = ContextBuilder(index, mode="windows").context_files
    try:
        main = root / "main.py"
        request = await assistant.prompt("k", text, len(text) - 1, PromptFile("w", "main.py", main))
    finally:
        assistant.close()
        index.close()
    assert request.fim is not None
    rows = text.split("\n")
    [(path, shown)] = request.fim.context_files
    assert path == "main.py" and shown.split("\n")[0] == rows[0]
    excerpt = (request.fim.prefix + request.fim.suffix).split("\n")
    assert "filler_199 = 199" in excerpt and rows[0] not in excerpt
    assert not set(shown.split("\n")) & set(excerpt) - {""}
