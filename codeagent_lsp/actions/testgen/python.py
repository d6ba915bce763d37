"""Python tests: pytest functions in test_<module>.py (in tests/ when the project has one)."""

from __future__ import annotations

from codeagent_lsp.actions.testgen.base import Style, TestPlan, definition_name, node_text


class PythonStyle(Style):
    framework = "pytest"
    how = "Write test functions named test_... with plain asserts, using only pytest."
    import_types = frozenset({"import_statement", "import_from_statement"})
    gap = "\n\n\n"

    def plan(self, root, source, text, symbol, files):
        inside = source.is_relative_to(root)
        relative = source.relative_to(root).as_posix() if inside else source.name
        module = relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        folder = root / "tests" if (root / "tests").is_dir() else source.parent
        return TestPlan(
            folder / f"test_{source.stem}.py",
            "python",
            self.framework,
            symbol,
            imports=(f"from {module} import {symbol}",),
        )

    def is_item(self, node, plan):
        if node.parent is None or node.parent.type != "module":
            return False
        name = definition_name(node)
        if node.type == "decorated_definition" and "fixture" in node_text(node).split("\n")[0]:
            return True
        return node.type in (
            "function_definition",
            "class_definition",
            "decorated_definition",
        ) and name.lower().startswith("test")
