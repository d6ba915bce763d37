"""Emacs 28 (Debian's emacs-nox) with eglot (elpa-eglot), in batch: editors/emacs/codeagent.el
loaded as a user would, M-x eglot on a Python file of a workspace, then Emacs's own commands:
completion-at-point, eldoc, xref and the code actions. The project's `.dir-locals.el` sets
`eglot-workspace-configuration`, Emacs's way of sending settings, and the server obeys it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECTS, REPO

EMACS = shutil.which("emacs")
SESSION = Path(__file__).with_name("emacs_session.el")
pytestmark = pytest.mark.skipif(
    EMACS is None and not os.environ.get("CI"),
    reason="Emacs is not installed (.ci/run installs emacs-nox and elpa-eglot; CI fails without)",
)
# Only the project's eglot-workspace-configuration says 7: initializationOptions say 48.
DIR_LOCALS = (
    "((nil . ((eglot-workspace-configuration . (:codeagent (:completion (:maxTokens 7)))))))\n"
)


def run_emacs(tmp_path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """emacs_session.el on `spec`; what it saw, or the test fails with Emacs's own error."""
    assert EMACS, "Emacs must be installed in CI"
    out = tmp_path / "emacs-out.json"
    (tmp_path / "spec.json").write_text(json.dumps({**spec, "out": str(out)}))
    done = subprocess.run(
        # -q, not -Q: site-start must run, it puts Debian's elpa-eglot on the load path
        [
            EMACS,
            "--batch",
            "-q",
            "-l",
            str(REPO / "editors" / "emacs" / "codeagent.el"),
            "-l",
            str(SESSION),
        ],
        cwd=Path(spec["file"]).parent,
        env={
            **os.environ,
            "HOME": str(tmp_path),
            "CODEAGENT_EMACS_SPEC": str(tmp_path / "spec.json"),
        },
        capture_output=True,
        text=True,
        timeout=spec["deadline_s"] * 4,
        check=False,
    )
    assert out.is_file(), f"Emacs wrote no result (exit {done.returncode}): {done.stderr[-2000:]}"
    seen = json.loads(out.read_text())
    assert "error" not in seen, f"{seen['error']}\n{done.stderr[-2000:]}"
    return seen


def test_eglot_completion_hover_definition_actions_and_settings(tmp_path: Path, tiny_model: Path):
    project = tmp_path / "project"
    shutil.copytree(PROJECTS / "python", project)
    (project / ".git").mkdir()  # project.el finds the workspace root by it
    (project / ".dir-locals.el").write_text(DIR_LOCALS)
    lines = (project / "app.py").read_text().split("\n")
    body = lines.index('    return f"{c.name}: {c.area():.2f}"')
    call = lines.index("    print(describe(Circle(1.5)))")
    on_circle = {"line": call + 1, "column": len("    print(describe(C")}
    seen = run_emacs(
        tmp_path,
        {
            "file": str(project / "app.py"),
            "initialization_options": {
                "model": str(tiny_model),
                "engine": {"threads": 1},
                "completion": {"maxTokens": 48, "warm": False},
                "codegraph": {"cacheDir": str(tmp_path / "codegraph")},
            },
            "completion": {"line": body + 1, "column": len(lines[body])},
            "hover": on_circle,
            "definition": on_circle,
            "actions": {"line": lines.index("def describe(c: Circle) -> str:") + 1, "column": 0},
            "deadline_s": 120,
        },
    )
    assert seen["connected"] and seen["server"] == "codeagent-lsp"
    (candidate,) = seen["completion"]["candidates"]
    assert candidate.strip()
    assert seen["completion"]["line"] == lines[body] + candidate  # the only one, inserted
    assert "class Circle(Shape)" in seen["hover"]
    definition = seen["definition"]
    assert Path(definition["file"]) == project / "shapes" / "geometry.py"
    assert definition["text"].startswith("class Circle(")
    assert seen["actions"] == [
        "Explain this code",
        "Add docstring to describe",
        "Generate tests for describe",
    ]
    # eglot-workspace-configuration reached the server: its model calls stopped at 7 tokens
    calls = [r for r in seen["stats"]["records"] if r["outcome"] == "ok"]
    assert calls and all(r["generatedTokens"] == 7 for r in calls)
