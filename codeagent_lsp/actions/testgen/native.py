"""C and C++ tests: GoogleTest when the project uses it, else plain assert programs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import tree_sitter

from codeagent_lsp.actions.testgen.base import (
    Insertion,
    Style,
    TestPlan,
    definition_name,
    looks_like_test,
    node_text,
)
from codeagent_lsp.codegraph import extract, languages


class NativeStyle(Style):
    """C and C++: `tests/test_<name>.c(pp)` holding `test_...` functions checked with assert
    and a main that calls them (runs with a plain compiler); GoogleTest for C++ projects that
    already use it (`tests/<name>_test.cpp`, TEST blocks, linked with gtest_main)."""

    import_types = frozenset({"preproc_include", "using_declaration"})

    def plan(self, root, source, text, symbol, files):
        language = languages.language_for(source) or "c"
        folder = (
            root / "test"
            if (root / "test").is_dir() and not (root / "tests").is_dir()
            else root / "tests"
        )
        gtest = language == "cpp" and _uses_gtest(root, files)
        name = f"{source.stem}_test" if gtest else f"test_{source.stem}"
        test_file = folder / f"{name}{'.cpp' if language == 'cpp' else '.c'}"
        header = next(
            (h for h in (source.with_suffix(s) for s in (".h", ".hpp", ".hh")) if h.is_file()),
            source,
        )
        declared = (
            header.read_text(encoding="utf-8", errors="replace") if header != source else text
        )
        runner = (
            "#include <gtest/gtest.h>"
            if gtest
            else "#include <cassert>"
            if language == "cpp"
            else "#include <assert.h>"
        )
        imports = [runner, f'#include "{os.path.relpath(header, folder)}"']
        imports += [
            f"using namespace {n};"
            for n in dict.fromkeys(re.findall(r"^namespace\s+(\w+)", declared, re.MULTILINE))
        ]
        return TestPlan(
            test_file,
            language,
            "GoogleTest" if gtest else "assert",
            symbol.split("::")[0].split(".")[0],
            imports=tuple(imports),
        )

    def how_for(self, plan):
        if plan.framework == "GoogleTest":
            return "Write GoogleTest `TEST(Suite, Name)` blocks using EXPECT_EQ and EXPECT_NEAR."
        return "Write `static void test_...(void)` functions checking with assert; no main."

    def is_item(self, node, plan):
        if node.type != "function_definition":
            return False
        name = definition_name(node)
        if plan.framework == "GoogleTest":
            return name in ("TEST", "TEST_F", "TEST_P")
        parameters = node_text(_parameters(node)).replace(" ", "")
        return name.startswith("test") and parameters in ("()", "(void)")

    def keep_import(self, text, plan, body):
        return ("<" in text and "gtest" not in text) or text.startswith("using namespace")

    def new_file(self, plan, imports, items):
        if plan.framework == "GoogleTest":
            return super().new_file(plan, imports, items)
        return super().new_file(plan, imports, items) + "\n" + self._main(plan, items)

    def extend(self, plan, tree, existing, imports, items):
        result = super().extend(plan, tree, existing, imports, items)
        main = next(
            (
                n
                for n in tree.root_node.named_children
                if n.type == "function_definition" and definition_name(n) == "main"
            ),
            None,
        )
        if plan.framework == "GoogleTest" or main is None:
            return result
        result[0] = Insertion(main.start_point.row, self._block(items) + "\n\n")
        body = main.child_by_field_name("body")
        statements = body.named_children if body else []
        last = statements[-1] if statements and statements[-1].type == "return_statement" else body
        row = last.start_point.row if last is not body else body.end_point.row
        result.append(
            Insertion(
                row, "".join(f"    {definition_name(self._item_node(i, plan))}();\n" for i in items)
            )
        )
        return result

    def _main(self, plan: TestPlan, items: list[str]) -> str:
        calls = "".join(f"    {definition_name(self._item_node(i, plan))}();\n" for i in items)
        void = "" if plan.language == "cpp" else "void"
        return f"int main({void}) {{\n{calls}    return 0;\n}}\n"

    @staticmethod
    def _item_node(item: str, plan: TestPlan) -> tree_sitter.Node:
        tree = extract.parse(item.encode("utf-8"), plan.language)
        return tree.root_node.named_children[-1]


def _parameters(node: tree_sitter.Node) -> tree_sitter.Node:
    declarator = node.child_by_field_name("declarator")
    while declarator is not None and declarator.type != "function_declarator":
        declarator = declarator.child_by_field_name("declarator")
    parameters = declarator.child_by_field_name("parameters") if declarator else None
    return parameters or node


def _uses_gtest(root: Path, files: tuple[str, ...]) -> bool:
    builds = [root / n for n in ("CMakeLists.txt", "meson.build", "conanfile.txt", "vcpkg.json")]
    tests = [root / f for f in files if looks_like_test(f)][:20]
    for path in [*builds, *tests]:
        if path.is_file() and re.search(
            r"gtest|GTest|googletest", path.read_text(encoding="utf-8", errors="replace")
        ):
            return True
    return False
