"""Java tests: JUnit classes under the project's test source root."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from codeagent_lsp.actions.testgen.base import Insertion, Style, TestPlan, definition_name


class JavaStyle(Style):
    framework = "JUnit 5"
    how = "Write `@Test void ...()` methods using org.junit.jupiter.api.Assertions."
    import_types = frozenset({"import_declaration"})
    indent = "    "
    gap = "\n\n"
    _annotations = frozenset(
        {
            "Test",
            "ParameterizedTest",
            "RepeatedTest",
            "BeforeEach",
            "AfterEach",
            "BeforeAll",
            "AfterAll",
        }
    )

    def plan(self, root, source, text, symbol, files):
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.MULTILINE)
        name = package.group(1) if package else ""
        dirs = Path(*name.split(".")) if name else Path()
        test_root = _java_test_root(root, source, dirs, files)
        preamble = f"package {name};" if name else ""
        return TestPlan(
            test_root / dirs / f"{source.stem}Test.java",
            "java",
            self.framework,
            symbol.split(".")[0],
            preamble=preamble,
            imports=(
                "import org.junit.jupiter.api.Test;",
                "import static org.junit.jupiter.api.Assertions.*;",
            ),
        )

    def is_item(self, node, plan):
        if node.type != "method_declaration" or node.child_by_field_name("body") is None:
            return False
        modifiers = next((c for c in node.children if c.type == "modifiers"), None)
        names = [
            definition_name(a)
            for a in (modifiers.named_children if modifiers else ())
            if a.type in ("marker_annotation", "annotation")
        ]
        return bool(self._annotations.intersection(names))

    def keep_import(self, text, plan, body):
        allowed = r"import\s+(static\s+)?(java|javax|org\.junit\.jupiter)\."
        return re.match(allowed, text) is not None

    def new_file(self, plan, imports, items):
        head = "\n\n".join(p for p in (plan.preamble, "\n".join(imports)) if p)
        return f"{head}\n\nclass {plan.file.stem} {{\n\n{self._block(items)}\n}}\n"

    def extend(self, plan, tree, existing, imports, items):
        classes = [n for n in tree.root_node.named_children if n.type == "class_declaration"]
        if not classes:
            return super().extend(plan, tree, existing, imports, items)
        result = super().extend(plan, tree, existing, imports, items)
        body = classes[0].child_by_field_name("body")
        result[0] = Insertion(body.end_point.row, "\n" + self._block(items) + "\n")
        return result


def _java_test_root(root: Path, source: Path, dirs: Path, files: tuple[str, ...]) -> Path:
    """Where the project's Java tests live: beside an existing *Test.java's package folders,
    else src/test/java mirroring src/main/java (Maven and Gradle's layout)."""
    for relative in files:
        if relative.endswith(("Test.java", "Tests.java")) and (root / relative).is_file():
            head = (root / relative).read_text(encoding="utf-8", errors="replace")[:4000]
            package = re.search(r"^package\s+([\w.]+)\s*;", head, re.MULTILINE)
            folder = PurePosixPath(relative).parent
            parts = package.group(1).split(".") if package else []
            if list(folder.parts[len(folder.parts) - len(parts) :]) == parts:
                return root / Path(*folder.parts[: len(folder.parts) - len(parts)])
    parts = source.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == ("src", "main", "java"):
            return Path(*parts[:i], "src", "test", "java")
    return root / "src" / "test" / "java"
