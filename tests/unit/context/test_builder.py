"""The context builder: budget to the token, stable while typing in a definition, no leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.assets import AssetIndex
from codeagent_lsp.context.builder import ContextBuilder
from codeagent_lsp.security.paths import PathPolicy
from codeagent_lsp.settings import CodegraphSettings


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
    for mode in ("windows", "full"):
        files = ContextBuilder(index, mode=mode).context_files(
            "k", path, masked, offset, 2000, count
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
    return {line for _path, text in files for line in text.split("\n") if line.strip()}


def test_each_ablation_mode_draws_on_its_own_sources(python_index):
    index, root = python_index
    path, text, offset = cursor_in_describe(root)

    def context(mode: str) -> list[tuple[str, str]]:
        return ContextBuilder(index, mode=mode).context_files("k", path, text, offset, 4000, count)

    line = text.count("\n", 0, offset)
    cost = lambda snippet: count("", snippet)  # noqa: E731
    definitions = index.related(path, text, line, 4000, cost, ["definition"])
    signatures = index.related(path, text, line, 4000, cost, ["import"])
    assert _lines(context("definitions")) == _lines([("", s.text) for s in definitions])
    assert _lines(context("signatures")) == _lines([("", s.text) for s in signatures])
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
