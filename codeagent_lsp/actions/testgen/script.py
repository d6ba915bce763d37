"""JavaScript and TypeScript tests: `describe`/`it` blocks for Vitest or Jest, whichever the
project uses."""

from __future__ import annotations

import json
import re
from pathlib import Path

from codeagent_lsp.actions.testgen.base import (
    Style,
    TestPlan,
    looks_like_test,
    node_text,
    relative_import,
)
from codeagent_lsp.codegraph import languages


class ScriptStyle(Style):
    """Jest or Vitest for JavaScript, TypeScript and TSX."""

    how = "Write `describe` blocks with `it` cases and `expect` assertions."
    import_types = frozenset({"import_statement"})
    _runners = ("describe", "it", "test")

    def plan(self, root, source, text, symbol, files):
        language = languages.language_for(source) or "javascript"
        tests = [
            f
            for f in files
            if looks_like_test(f) and Path(f).suffix in languages.spec(language).extensions
        ]
        framework = _script_framework(root, source, tests)
        marker = ".spec" if sum(".spec." in f for f in tests) * 2 > len(tests) else ".test"
        folder = source.parent
        if any("/__tests__/" in f"/{f}" for f in tests):
            folder = source.parent / "__tests__"
        elif tests and all(f.split("/")[0] in ("test", "tests") for f in tests):
            folder = root / tests[0].split("/")[0]
        test_file = folder / f"{source.stem}{marker}{source.suffix}"
        spec = relative_import(test_file, source.with_suffix(""))
        if re.search(r"""from\s+["']\.{1,2}/[^"']+\.[mc]?js["']""", text):
            spec += ".js" if language != "javascript" else source.suffix
        if re.search(rf"export\s+default\s+(?:(?:async\s+)?function\s+|class\s+)?{symbol}\b", text):
            line = f'import {symbol} from "{spec}";'
        elif "module.exports" in text and not re.search(r"^export\s", text, re.MULTILINE):
            line = f'const {{ {symbol} }} = require("{spec}");'
        else:
            line = f'import {{ {symbol} }} from "{spec}";'
        return TestPlan(test_file, language, framework, symbol, imports=(line,))

    def is_item(self, node, plan):
        if (
            node.type != "expression_statement"
            or node.parent is None
            or node.parent.type != "program"
        ):
            return False
        call = node.named_children[0] if node.named_children else None
        if call is None or call.type != "call_expression":
            return False
        callee = call.child_by_field_name("function")
        while callee is not None and callee.type == "member_expression":
            callee = callee.child_by_field_name("object")
        return callee is not None and node_text(callee) in self._runners

    def keep_import(self, text, plan, body):
        source = re.search(r"""from\s+["']([^"']+)["']""", text)
        where = source.group(1) if source else ""
        framework_package = where in ("vitest", "@jest/globals")
        return (
            super().keep_import(text, plan, body)
            and not where.startswith(".")
            and not framework_package
        )

    def needed_imports(self, plan, body):
        if plan.framework == "Jest":  # Jest's globals need no import
            return list(plan.imports)
        used = [
            n
            for n in ("afterEach", "beforeEach", "describe", "expect", "it", "test", "vi")
            if re.search(rf"\b{n}\b", body)
        ]
        return [f'import {{ {", ".join(used)} }} from "vitest";', *plan.imports]


def _script_framework(root: Path, source: Path, tests: list[str]) -> str:
    """Vitest or Jest from the nearest package.json's dependencies, else from how existing
    tests import their runner; Jest when nothing says."""
    for folder in [source.parent, *source.parent.parents]:
        manifest = folder / "package.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                break
            declared = {**data.get("dependencies", {}), **data.get("devDependencies", {})}
            if "vitest" in declared:
                return "Vitest"
            if declared.keys() & {"jest", "ts-jest", "babel-jest", "@jest/globals"}:
                return "Jest"
            break
        if folder == root:
            break
    for test in tests[:20]:
        head = (
            (root / test).read_text(encoding="utf-8", errors="replace")[:2000]
            if (root / test).is_file()
            else ""
        )
        if re.search(r"""from\s+["']vitest["']""", head):
            return "Vitest"
    return "Jest"
