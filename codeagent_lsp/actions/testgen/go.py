"""Go tests: `func TestX(t *testing.T)` in the package's own _test.go file."""

from __future__ import annotations

import re

from codeagent_lsp.actions.testgen.base import Style, TestPlan, definition_name


class GoStyle(Style):
    framework = "Go's testing package"
    how = "Write `func TestXxx(t *testing.T)` functions that report failures with t.Errorf."
    import_types = frozenset({"import_spec"})
    indent = ""

    def plan(self, root, source, text, symbol, files):
        package = re.search(r"^package\s+(\w+)", text, re.MULTILINE)
        return TestPlan(
            source.with_name(f"{source.stem}_test.go"),
            "go",
            self.framework,
            symbol,
            preamble=f"package {package.group(1) if package else 'main'}",
            imports=('"testing"',),
        )

    def is_item(self, node, plan):
        return (
            node.type == "function_declaration"
            and node.child_by_field_name("body") is not None  # a cut-off answer's last one
            and re.match(r"(Test|Benchmark|Example|Fuzz)", definition_name(node)) is not None
        )

    def keep_import(self, text, plan, body):
        # Go refuses unused imports: keep only packages the tests name.
        alias, _, path = text.rpartition(" ")
        name = alias or path.strip('"').rsplit("/", 1)[-1]
        return re.search(rf"\b{re.escape(name)}\.", body) is not None

    def import_lines(self, imports):
        if len(imports) == 1:
            return f"import {imports[0]}"
        return "import (\n" + "".join(f"\t{i}\n" for i in imports) + ")"

    def _imports_line(self, tree):
        rows = [
            n.end_point.row + 1
            for n in tree.root_node.named_children
            if n.type in ("import_declaration", "package_clause")
        ]
        return max(rows, default=0)
