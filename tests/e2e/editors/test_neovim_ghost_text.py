"""Ghost text in a real editor: Neovim 0.12 with editors/nvim/codeagent.lua, used as a user
would (setup(), a file, insert mode, typing, <Tab>, the <leader>c keymaps), on the tiny model
and once on the real one. The 0.7 test (tests/e2e/test_neovim.py) stays for old versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REAL_MODEL
from tests.e2e.editors.nvim import run_session

ARITH = (
    "def add(a, b):\n    return a + b\n\n\n"
    "def multiply(a, b):\n    return \n\n\n"
    "print(multiply(2, 3))\n"
)
RETURN_ROW, DEF_ROW, BROKEN_ROW = 5, 4, 0  # 0-based, as extmarks count
# Before <leader>cf the user breaks a line and another linter reports it.
BROKEN = {"line": "def add(a, b)", "message": "expected ':'"}


def _session(
    tmp_path: Path, model: Path, deadline_s: int, lsp_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()  # a root marker, as in a real checkout
    (project / "arith.py").write_text(ARITH)
    settings = {
        "model": str(model),
        "engine": {"threads": 1},
        # no warm-ups: the test counts the server's records around one keystroke
        "completion": {"warm": False},
        "codegraph": {"cacheDir": str(tmp_path / "codegraph")},
    }
    spec = {
        "settings": settings,
        "file": str(project / "arith.py"),
        "row": RETURN_ROW + 1,  # the cursor, as nvim_win_set_cursor counts (1-based rows)
        "col": 0,
        "ghost_text": True,
        "action_row": DEF_ROW + 1,
        "menu_choice": "Explain this code",
        "keymaps": [
            {"keys": "<leader>ce"},
            {"keys": "<leader>cd"},
            {"keys": "<leader>ct"},
            {"keys": "<leader>cf", "row": BROKEN_ROW + 1, "diagnostic": BROKEN},
            {"keys": "<leader>ca"},
        ],
        "deadline_ms": deadline_s * 1000,
    }
    if lsp_config:
        spec["lsp_config"] = lsp_config
    return run_session(tmp_path, spec, timeout=deadline_s * 4)


def _check_ghost_text(seen: dict[str, Any]) -> str:
    """Shown as virtual text at the cursor, kept (without a model call) while the user types
    its first character, and put in the buffer by <Tab>. Returns the suggestion."""
    shown = seen["shown"]
    assert (shown["row"], shown["col"]) == (RETURN_ROW, len("    return "))
    assert shown["text"].strip()
    assert seen["line_while_shown"] == "    return "  # virtual: not in the buffer
    assert [r["outcome"] for r in seen["records_after_typing"]] == ["typeahead"]
    assert seen["after_answer"]["text"] == shown["text"][1:]
    assert seen["accepted_lines"][RETURN_ROW] == "    return " + shown["text"].split("\n")[0]
    return shown["text"]


def _steps(seen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    steps = {step["keys"]: step for step in seen["steps"]}
    assert list(steps) == ["<leader>ce", "<leader>cd", "<leader>ct", "<leader>cf", "<leader>ca"]
    return steps


def _check_explain_and_menu(steps: dict[str, dict[str, Any]], seen: dict[str, Any]) -> None:
    for keys in ("<leader>ce", "<leader>ca"):  # the menu's choice is "Explain this code"
        assert steps[keys]["opened"].endswith(".md")
        assert steps[keys]["opened_lines"][0] == "# multiply"
    assert seen["menu"] == [
        "Explain this code",
        "Add docstring to multiply",
        "Generate tests for multiply",
    ]


def _docstring_row(lines: list[str]) -> str:
    return lines[DEF_ROW + 1].strip()


def test_ghost_text_typeahead_accept_keymaps_and_settings(tmp_path: Path, tiny_model: Path):
    # Neovim's way of sending settings: the client config's `settings` (answered to the
    # server's workspace/configuration); setup()'s table, sent as initializationOptions too,
    # leaves maxTokens at its default, 48.
    settings = {"settings": {"codeagent": {"completion": {"maxTokens": 9}}}}
    seen = _session(tmp_path, tiny_model, deadline_s=120, lsp_config=settings)
    _check_ghost_text(seen)
    (ghost_text_call,) = seen["records_shown"]
    assert ghost_text_call["outcome"] == "ok" and ghost_text_call["generatedTokens"] == 9
    steps = _steps(seen)
    _check_explain_and_menu(steps, seen)
    # The tiny model's noise still makes a docstring; tests and fixes of noise do not parse,
    # and the plugin says so, naming the action the keymap ran.
    assert _docstring_row(steps["<leader>cd"]["lines"]).startswith('"""')
    assert (
        "codeagent: Generate tests for multiply: nothing to change"
        in (steps["<leader>ct"]["messages"])
    )
    assert "codeagent: Fix: expected ':': nothing to change" in (steps["<leader>cf"]["messages"])


@pytest.mark.real_model
def test_real_model_ghost_text_and_keymaps(tmp_path: Path):
    seen = _session(tmp_path, REAL_MODEL, deadline_s=600)
    assert _check_ghost_text(seen).replace(" ", "") == "a*b"
    steps = _steps(seen)
    _check_explain_and_menu(steps, seen)
    assert _docstring_row(steps["<leader>cd"]["lines"]).startswith('"""')
    tests = steps["<leader>ct"]
    assert Path(tests["created"]).name == "test_arith.py"
    assert any(line.startswith("def test_") for line in tests["created_lines"])
    fixed = steps["<leader>cf"]["lines"]
    assert fixed[BROKEN_ROW] == "def add(a, b):"
