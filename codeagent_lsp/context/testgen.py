"""Generated tests for every CodeGraph language: where the test file goes, which framework the
project uses, and how the model's answer becomes insertions that parse.

One path for all languages (`plan_tests` -> prompt -> `assemble`); what differs is a small
`Style` per language family in STYLES. Only whole test items (test functions, `describe`
blocks, `#[test]` functions, `@Test` methods) and the imports they need are taken from the
answer; the file's header (package clause, the framework's and the tested code's imports) is
written here, so a small model's wrong import path or its copy of the function under test never
reaches the file.
"""

from __future__ import annotations

import ast
import json
import os
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import tree_sitter

from codeagent_lsp.codegraph import extract, languages
from codeagent_lsp.context.instruct import SYSTEM, CodeAtLine, fenced_blocks

_TEST_PATH = re.compile(
    r"(^|/)(__tests__|tests?)/|(^|/)test_[^/]*$|[._]test\.|\.spec\.|Tests?\.java$"
)


@dataclass(frozen=True)
class TestPlan:
    file: Path
    language: str
    """The test file's language: its parser and code fence."""
    framework: str
    symbol: str
    """What the tests import or call: the function, or the class of a method."""
    preamble: str = ""
    """A new test file's first line (Go's package clause, Java's package statement)."""
    imports: tuple[str, ...] = ()
    """Import lines the tests need, added to an existing test file when it lacks them."""
    in_source: bool = False
    """The tests go into the source file itself (Rust's `mod tests`)."""


@dataclass(frozen=True)
class Insertion:
    """`text` inserted at the start of 0-based `line`; the line count means the end."""

    line: int
    text: str


def looks_like_test(relative: str) -> bool:
    return bool(_TEST_PATH.search(relative))


def parse_errors(text: str, language: str) -> int:
    """ERROR and MISSING nodes tree-sitter finds; Python's own parser must accept it too."""
    if language == "python":
        try:
            ast.parse(text)
        except (SyntaxError, ValueError):
            return max(1, _tree_errors(text, language))
    return _tree_errors(text, language)


def _tree_errors(text: str, language: str) -> int:
    tree = extract.parse(text.encode("utf-8", errors="replace"), language)
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        elif node.has_error:  # only subtrees holding an error are worth walking
            stack.extend(node.children)
    return count


def apply(text: str, insertions: list[Insertion]) -> str:
    lines = text.split("\n")
    for insertion in sorted(insertions, key=lambda i: -i.line):
        offset = sum(len(row) + 1 for row in lines[: insertion.line])
        joined = "\n".join(lines)
        offset = min(offset, len(joined))
        lines = (joined[:offset] + insertion.text + joined[offset:]).split("\n")
    return "\n".join(lines)


def _node_text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", errors="replace")


def _walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.named_children:
        yield from _walk(child)


def _name(node: tree_sitter.Node) -> str:
    """A definition's name: its `name` field, or a C declarator's innermost identifier."""
    while node is not None:
        named = node.child_by_field_name("name")
        if named is not None:
            return _node_text(named)
        inner = node.child_by_field_name("definition") or node.child_by_field_name("declarator")
        if inner is None:
            return _node_text(node) if node.type in ("identifier", "field_identifier") else ""
        node = inner
    return ""


def _relative_import(test_file: Path, target: Path) -> str:
    spec = Path(os.path.relpath(target, test_file.parent)).as_posix()
    return spec if spec.startswith(".") else f"./{spec}"


class Style:
    """The defaults: tests are top-level items appended at the end of the test file, and new
    imports go after the file's last import."""

    framework = ""
    how = ""
    """What the tests look like, for the prompt."""
    import_types: frozenset[str] = frozenset()
    gap = "\n\n"
    indent = ""

    def plan(
        self, root: Path, source: Path, text: str, symbol: str, files: tuple[str, ...]
    ) -> TestPlan:
        raise NotImplementedError

    def is_item(self, node: tree_sitter.Node, plan: TestPlan) -> bool:
        raise NotImplementedError

    def how_for(self, plan: TestPlan) -> str:
        return self.how

    def item_start(self, node: tree_sitter.Node) -> tree_sitter.Node:
        return node

    def keep_import(self, text: str, plan: TestPlan, body: str) -> bool:
        return re.search(rf"\b{re.escape(plan.symbol)}\b", text) is None

    def needed_imports(self, plan: TestPlan, body: str) -> list[str]:
        return list(plan.imports)

    def import_lines(self, imports: list[str]) -> str:
        return "\n".join(imports)

    def new_file(self, plan: TestPlan, imports: list[str], items: list[str]) -> str:
        head = "\n\n".join(part for part in (plan.preamble, self.import_lines(imports)) if part)
        return f"{head}{self.gap}{self._block(items)}\n" if head else self._block(items) + "\n"

    def extend(
        self,
        plan: TestPlan,
        tree: tree_sitter.Tree,
        existing: str,
        imports: list[str],
        items: list[str],
    ) -> list[Insertion]:
        found = [_node_text(n) for n in _walk(tree.root_node) if n.type in self.import_types]
        missing = [i for i in imports if _squash(i) not in {_squash(f) for f in found}]
        result = [self._at_end(existing, self.gap[1:] + self._block(items) + "\n")]
        if missing:
            result.append(Insertion(self._imports_line(tree), self.import_lines(missing) + "\n"))
        return result

    def _block(self, items: list[str]) -> str:
        return self.gap.join(textwrap.indent(item, self.indent) for item in items)

    def _imports_line(self, tree: tree_sitter.Tree) -> int:
        """The line after the last top-level import, else after the package clause, else 0."""
        rows = [
            n.end_point.row + 1
            for n in tree.root_node.named_children
            if n.type in self.import_types or n.type in ("package_clause", "package_declaration")
        ]
        return max(rows, default=0)

    @staticmethod
    def _at_end(existing: str, text: str) -> Insertion:
        """`text` (its blank lines first) after the file's last line."""
        lines = existing.split("\n")
        if not existing.strip():
            return Insertion(len(lines), text.lstrip("\n"))
        if existing.endswith("\n"):
            return Insertion(len(lines) - 1, text)
        return Insertion(len(lines), "\n" + text)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


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
        name = _name(node)
        if node.type == "decorated_definition" and "fixture" in _node_text(node).split("\n")[0]:
            return True
        return node.type in (
            "function_definition",
            "class_definition",
            "decorated_definition",
        ) and name.lower().startswith("test")


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
        spec = _relative_import(test_file, source.with_suffix(""))
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
        return callee is not None and _node_text(callee) in self._runners

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
            and re.match(r"(Test|Benchmark|Example|Fuzz)", _name(node)) is not None
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


class RustStyle(Style):
    """`#[test]` functions in the source file's `#[cfg(test)] mod tests`, or in the crate's
    tests/ folder when the project keeps its tests there."""

    framework = "Rust's built-in test harness"
    how = "Write `#[test]` functions using assert!, assert_eq! and assert_ne!."
    import_types = frozenset({"use_declaration"})

    def plan(self, root, source, text, symbol, files):
        crate = _crate_root(root, source) or source.parent
        integration = crate / "tests"
        has_module = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+", text) is not None
        in_src = source.is_relative_to(crate / "src")
        if has_module or not in_src or not any(integration.glob("*.rs")):
            return TestPlan(
                source, "rust", self.framework, symbol, imports=("use super::*;",), in_source=True
            )
        module = source.relative_to(crate / "src").with_suffix("").parts
        path = "::".join(p for p in (_crate_name(crate), *module) if p not in ("lib", "mod"))
        return TestPlan(
            integration / f"{source.stem}.rs",
            "rust",
            self.framework,
            symbol,
            imports=(f"use {path}::{symbol};",),
        )

    def is_item(self, node, plan):
        return node.type == "function_item" and any(
            re.search(r"\btest\b", _node_text(a)) for a in _attributes(node)
        )

    def item_start(self, node):
        return (_attributes(node) or [node])[0]

    def keep_import(self, text, plan, body):
        return re.match(r"use\s+(std|core|alloc)::", text) is not None

    def new_file(self, plan, imports, items):
        if not plan.in_source:
            return super().new_file(plan, imports, items)
        return self._module(imports, items)

    def extend(self, plan, tree, existing, imports, items):
        module = _tests_module(tree) if plan.in_source else None
        if module is None:
            if plan.in_source:
                return [self._at_end(existing, "\n" + self._module(imports, items))]
            return super().extend(plan, tree, existing, imports, items)
        body = module.child_by_field_name("body")
        found = {_squash(_node_text(n)) for n in body.named_children if n.type in self.import_types}
        missing = [i for i in imports if _squash(i) not in found]
        inner = " " * (module.start_point.column + 4)
        result = [
            Insertion(
                body.end_point.row, "\n" + textwrap.indent(self.gap.join(items), inner) + "\n"
            )
        ]
        if missing:
            result.append(
                Insertion(
                    body.start_point.row + 1, textwrap.indent("\n".join(missing), inner) + "\n"
                )
            )
        return result

    def _module(self, imports, items):
        uses = textwrap.indent("\n".join(imports), "    ")
        body = textwrap.indent(self.gap.join(items), "    ")
        return f"#[cfg(test)]\nmod tests {{\n{uses}\n\n{body}\n}}\n"


def _attributes(node: tree_sitter.Node) -> list[tree_sitter.Node]:
    """The attribute items right above a Rust item, first one first."""
    found: list[tree_sitter.Node] = []
    sibling = node.prev_named_sibling
    while sibling is not None and sibling.type == "attribute_item":
        found.insert(0, sibling)
        sibling = sibling.prev_named_sibling
    return found


def _tests_module(tree: tree_sitter.Tree) -> tree_sitter.Node | None:
    for node in tree.root_node.named_children:
        if (
            node.type == "mod_item"
            and node.child_by_field_name("body") is not None
            and any("cfg(test)" in _node_text(a).replace(" ", "") for a in _attributes(node))
        ):
            return node
    return None


def _crate_root(root: Path, source: Path) -> Path | None:
    for folder in source.parents:
        if (folder / "Cargo.toml").is_file():
            return folder
        if folder == root:
            break
    return None


def _crate_name(crate: Path) -> str:
    import tomllib  # standard library; only Rust projects need it

    try:
        data = tomllib.loads((crate / "Cargo.toml").read_text(encoding="utf-8"))
        return str(data["package"]["name"]).replace("-", "_")
    except (OSError, ValueError, KeyError):
        return crate.name.replace("-", "_")


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
            _name(a)
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
        name = _name(node)
        if plan.framework == "GoogleTest":
            return name in ("TEST", "TEST_F", "TEST_P")
        parameters = _node_text(_parameters(node)).replace(" ", "")
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
                if n.type == "function_definition" and _name(n) == "main"
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
            Insertion(row, "".join(f"    {_name(self._item_node(i, plan))}();\n" for i in items))
        )
        return result

    def _main(self, plan: TestPlan, items: list[str]) -> str:
        calls = "".join(f"    {_name(self._item_node(i, plan))}();\n" for i in items)
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


_SCRIPT, _NATIVE = ScriptStyle(), NativeStyle()
STYLES: dict[str, Style] = {
    "python": PythonStyle(),
    "javascript": _SCRIPT,
    "typescript": _SCRIPT,
    "tsx": _SCRIPT,
    "go": GoStyle(),
    "rust": RustStyle(),
    "java": JavaStyle(),
    "c": _NATIVE,
    "cpp": _NATIVE,
}


def plan_tests(
    root: Path, source: Path, text: str, name: str, files: tuple[str, ...]
) -> TestPlan | None:
    """Where tests of `name` (a qualified name: a method is tested through its class) go and
    with which framework; None for a language without a test style."""
    language = languages.language_for(source)
    style = STYLES.get(language or "")
    if style is None or not name:
        return None
    symbol = re.split(r"::|\.", name)[0]
    return style.plan(root, source, text, symbol, files)


def tests_request(target: CodeAtLine, plan: TestPlan, source: str, example: str) -> tuple[str, str]:
    """(system, user) asking for tests of `target` in the plan's framework, in the style of an
    existing test file of the project when there is one."""
    fence = plan.language
    head = "\n".join(p for p in (plan.preamble, *plan.imports) if p)
    parts = [
        f"Write {plan.framework} tests for `{target.name}` from `{source}`. "
        f"{STYLES[plan.language].how_for(plan)} Cover the usual case and the edge cases. "
        f"The test file starts with:\n```{fence}\n{head}\n```\n"
        f"Reply with one ```{fence} block holding the tests only; do not repeat `{plan.symbol}`.",
    ]
    if example:
        parts.append(f"Follow the style of this existing test file:\n```{fence}\n{example}\n```")
    parts.append(f"```{target.language}\n{target.code}\n```")
    return SYSTEM, "\n\n".join(parts)


def assemble(plan: TestPlan, answer: str, existing: str | None) -> list[Insertion] | None:
    """The insertions that create (`existing` None) or extend the test file with the test
    items of the answer; None when the answer has none, or the result would not parse."""
    style = STYLES[plan.language]
    items, imports = [], []
    for block in fenced_blocks(answer):
        found = _pieces(style, plan, block)
        if _tree_errors(block, plan.language):
            salvaged, uses = _pieces(style, plan, _closed(block))
            salvaged = [i for i in salvaged if i in found[0] or _has_statements(i)]
            found = max(found, (salvaged, uses), key=lambda f: len(f[0]))
        items += found[0]
        imports += found[1]
    if not items:
        return None
    body = "\n".join(items)
    kept = [i for i in imports if style.keep_import(i, plan, body)]
    wanted = list(dict.fromkeys([*style.needed_imports(plan, body), *kept]))
    if existing is None:
        insertions = [Insertion(0, style.new_file(plan, wanted, items))]
        before = 0
    else:
        tree = extract.parse(existing.encode("utf-8", errors="replace"), plan.language)
        insertions = style.extend(plan, tree, existing, wanted, items)
        before = parse_errors(existing, plan.language)
    if parse_errors(apply(existing or "", insertions), plan.language) > before:
        return None
    return insertions


def _pieces(style: Style, plan: TestPlan, block: str) -> tuple[list[str], list[str]]:
    """(test items, imports) of one code block, dedented."""
    items: list[str] = []
    imports: list[str] = []
    code = block.encode("utf-8")
    for node in _pick(
        extract.parse(code, plan.language).root_node,
        lambda n: style.is_item(n, plan) or n.type in style.import_types,
    ):
        start = style.item_start(node)
        line_start = code.rfind(b"\n", 0, start.start_byte) + 1
        piece = code[line_start : node.end_byte].decode("utf-8", errors="replace")
        if piece[: start.start_byte - line_start].strip():
            piece = code[start.start_byte : node.end_byte].decode("utf-8", errors="replace")
        found = imports if node.type in style.import_types else items
        found.append(textwrap.dedent(piece).strip())
    return items, imports


_CLOSER = {"(": ")", "[": "]", "{": "}"}


def _has_statements(item: str) -> bool:
    """Whether a salvaged item kept anything below its first line but closing brackets."""
    return any(row.strip(" \t)]};") for row in item.split("\n")[1:])


def _closed(block: str) -> str:
    """A block the token limit cut off (small models often repeat one assert until then): its
    partial last line dropped and the brackets left open closed, so the test that was being
    written keeps its complete statements. Brackets in strings are rare enough in tests (and
    balanced when they occur) to count them all."""
    text = block.rsplit("\n", 1)[0]
    stack: list[str] = []
    for char in text:
        if char in _CLOSER:
            stack.append(char)
        elif char in _CLOSER.values() and stack and _CLOSER[stack[-1]] == char:
            stack.pop()
    rows: list[str] = []
    for opener in reversed(stack):
        if opener == "{" or not rows:
            rows.append(_CLOSER[opener])
        else:
            rows[-1] += _CLOSER[opener]
    return "\n".join([text, *rows])


def _pick(node: tree_sitter.Node, wanted) -> Iterator[tree_sitter.Node]:
    """Nodes `wanted` accepts and that parsed cleanly (a truncated answer's last test does
    not), without looking inside them."""
    if wanted(node):
        if not node.has_error:
            yield node
        return
    for child in node.named_children:
        yield from _pick(child, wanted)
