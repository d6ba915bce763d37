"""`bench next-edits --language typescript`: the cases and their truth from the TypeScript
compiler API (`ts_truth.js`, run with node): module-level functions whose name is declared
once and that are called from two files or more (the compiler's `findReferences`), renamed and
given a parameter with and without a default; the places a change affects are the references
(a rename) or the calls that the compiler finds no longer fit (an arity error, or an argument
now reaching another parameter).

The compiler is not a dependency of this project: `TYPESCRIPT_INSTALL` puts a pinned version
in the cache folder, as `bench index` expects universal-ctags to be installed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from codeagent_lsp.bench.edit_cases import Case, Place, ToolMissing

TYPESCRIPT_VERSION = "5.9.3"
TYPESCRIPT_HOME = Path(
    os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "codeagent-lsp", "typescript"
)
TYPESCRIPT_INSTALL = (
    f"npm install --prefix {TYPESCRIPT_HOME} --no-audit --no-fund typescript@{TYPESCRIPT_VERSION}"
)
KINDS = ("rename", "add-required", "add-default")
_SUFFIXES = (".ts", ".tsx", ".mts", ".cts")
_TIMEOUT_S = 900


def typescript_cases(
    root: Path, indexed: set[str], functions: int, seed: int, say: Callable[[str], None]
) -> tuple[list[Case], dict[str, object]]:
    """Cases of `functions` functions drawn with `seed` among those of the indexed TypeScript
    files (declaration files aside). Raises ToolMissing without node or the compiler."""
    files = sorted(p for p in indexed if p.endswith(_SUFFIXES) and not p.endswith(".d.ts"))
    found = _run({"phase": "targets", "root": str(root), "files": files})
    targets: list[dict[str, Any]] = found["targets"]
    chosen = random.Random(seed).sample(targets, min(functions, len(targets)))
    say(f"{len(files)} files, {len(targets)} functions called from two files or more")
    request = [
        {"path": t["path"], "name": t["name"], "edits": {k: t["edits"][k] for k in KINDS[1:]}}
        for t in chosen
    ]
    broken = _run({"phase": "breaks", "root": str(root), "files": files, "cases": request})
    cases = []
    for target, calls in zip(chosen, broken["cases"], strict=True):
        rename: set[Place] = {tuple(u) for u in target["uses"]}
        changes = {"rename": (target["edits"]["rename"], rename)}
        for kind in KINDS[1:]:
            changes[kind] = (target["edits"][kind], {tuple(c) for c in calls[kind]})
        text = (root / target["path"]).read_bytes().decode("utf-8")  # as node read it
        cases.append(Case(target["path"], target["name"], text, changes))
    return cases, {"files": len(files), "truth": f"typescript {found['typescript']}"}


def _compiler() -> Path:
    node = shutil.which("node")
    library = TYPESCRIPT_HOME / "node_modules" / "typescript" / "lib" / "typescript.js"
    if node is None:
        raise ToolMissing("node is not installed: the truth needs the TypeScript compiler")
    if not library.is_file():
        raise ToolMissing(f"the TypeScript compiler is not installed; run: {TYPESCRIPT_INSTALL}")
    return library


def _run(request: dict[str, object]) -> dict[str, Any]:
    library = _compiler()
    script = resources.files("codeagent_lsp.bench").joinpath("ts_truth.js")
    with resources.as_file(script) as path:
        done = subprocess.run(
            ["node", str(path), str(library)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    if done.returncode:
        raise ToolMissing(f"the TypeScript truth failed: {done.stderr.strip()[-500:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer
