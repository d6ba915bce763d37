"""The project's code rules, run as tests so that CI enforces them (`.ci/run` runs pytest only):
ruff's lint and format, mypy over the package, no import circles between its modules, and
each layer below the LSP importing only the layers the package docstrings allow.

ruff's banned-API rule (TID251, configured in pyproject.toml) keeps pygls and lsprotocol inside
the LSP layer: features/, server.py, transport.py, node.py, documents.py and the tests.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m ARGS` in the checkout's root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        input=stdin,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    done = _module("ruff", *command, "--no-cache", "codeagent_lsp", "tests")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    done = _module("mypy", "--no-incremental")  # files: pyproject's [tool.mypy]
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_layers_below_lsp_may_not_import_pygls() -> None:
    """The rule bites: a module of context/ that imports LSP types is refused."""
    probe = "codeagent_lsp/context/probe.py"
    done = _module(
        "ruff", "check", "--no-cache", "--stdin-filename", probe, "-",
        stdin="from lsprotocol import types\n\nTYPES = types\n",
    )  # fmt: skip
    assert done.returncode == 1 and "TID251" in done.stdout, done.stdout


def _imported(module: str, tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules `module` imports anywhere (in functions and under TYPE_CHECKING
    too: a circle through either still ties the two modules together)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                package = module.split(".")[: -node.level]
                base = ".".join([*package, *([node.module] if node.module else [])])
            # `from package import module` imports that module, `from module import name` the
            # module itself (a package's __init__ runs first either way: not counted)
            named = {f"{base}.{alias.name}" for alias in node.names}
            found.update(named & modules)
            if named - modules:
                found.add(base)
    return found & modules - {module}


def import_graph(package: Path) -> nx.DiGraph:
    """Module -> the modules it imports, over every .py file of `package`."""
    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph.add_edges_from((module, other) for other in _imported(module, tree, set(files)))
    return graph


def test_no_import_circles() -> None:
    graph = import_graph(ROOT / "codeagent_lsp")
    circles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not circles, circles


def test_the_import_graph_sees_a_circle(tmp_path: Path) -> None:
    """The check bites: two modules importing each other (one lazily, one for typing only)."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    (package / "c.py").write_text("import pkg.a\n")
    graph = import_graph(package)
    assert [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1] == [
        ["pkg.a", "pkg.b"]
    ]


BELOW = {"security", "settings", "lines"}
LAYERS: dict[str, set[str]] = {
    "security": set(),
    "settings": set(),
    "lines": set(),
    "codegraph": BELOW,
    "engine": BELOW | {"metrics"},
    "metrics": {"engine"},  # the request record's type only
    "context": BELOW | {"codegraph", "engine"},
    "assistant": BELOW | {"context", "codegraph", "engine", "metrics"},
    "actions": BELOW | {"assistant", "context", "codegraph", "engine"},
    "nextedits": BELOW | {"actions", "assistant", "context", "codegraph", "engine"},
    "headless": BELOW | {"actions", "assistant", "context", "codegraph", "engine"},
    "bench": BELOW | {"nextedits", "assistant", "context", "codegraph", "engine", "metrics"},
    "doctor": BELOW | {"context", "codegraph", "engine"},
}
"""Each layer below the LSP one (by its first name under codeagent_lsp) and the layers it may
import besides itself and the package's root, as the package docstrings say."""


def test_each_layer_imports_only_the_layers_below_it() -> None:
    def layer(module: str) -> str:
        return module.split(".")[1] if "." in module else ""

    wrong = sorted(
        f"{a} imports {b}"
        for a, b in import_graph(ROOT / "codeagent_lsp").edges
        if layer(a) in LAYERS and layer(b) not in {layer(a), "", *LAYERS[layer(a)]}
    )
    assert not wrong, wrong
