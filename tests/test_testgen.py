"""Generated tests per language: the test file's place, the framework, the header, and the
assembled file (new or extended) parsing with tree-sitter. The model's answers are written
here as a model writes them (with their usual faults), so every check is deterministic."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codeagent_lsp.actions import testgen
from codeagent_lsp.actions.pipeline import example_tests, project_files

PROJECTS = Path(__file__).parent / "fixtures" / "projects"


def copy_project(tmp_path: Path, language: str) -> Path:
    root = tmp_path / language
    shutil.copytree(PROJECTS / language, root)
    return root


def plan_for(root: Path, relative: str, name: str) -> testgen.TestPlan:
    source = root / relative
    text = source.read_text()
    plan = testgen.plan_tests(root, source, text, name, project_files(root, source, None))
    assert plan is not None
    return plan


def generate(plan: testgen.TestPlan, answer: str, source: Path | None = None) -> str:
    """The test file after the edit, checked to parse."""
    if plan.file == source:
        existing: str | None = source.read_text()
    else:
        existing = plan.file.read_text() if plan.file.exists() else None
    insertions = testgen.assemble(plan, answer, existing)
    assert insertions is not None
    after = testgen.apply(existing or "", insertions)
    assert testgen.parse_errors(after, plan.language) == 0
    return after


# Answers as a small model writes them: its own header (sometimes with wrong imports), the
# function under test copied again, and the last test cut off by the token limit.
NEW_FILES = {
    "python": (
        "shapes/geometry.py",
        "Circle.area",
        "shapes/test_geometry.py",
        ["from shapes.geometry import Circle\n"],
        "```python\nimport math\nfrom geometry import Circle\n\nclass Circle:\n    pass\n\n"
        "def test_area():\n    assert Circle(1).area() == math.pi\n\n"
        "def test_zero():\n    assert Circle(0).area(",
    ),
    "javascript": (
        "geometry.js",
        "area",
        "geometry.test.js",
        ['import { area } from "./geometry";\n'],
        "```javascript\nconst { area } = require('../src/geometry');\n\n"
        "describe('area', () => {\n  it('multiplies', () => {\n    expect(area(2, 3)).toBe(6);\n"
        "  });\n});\n\ntest('zero', () => {\n  expect(area(0, 3",
    ),
    "typescript": (
        "geometry.ts",
        "Circle.area",
        "geometry.test.ts",
        ['import { Circle } from "./geometry";\n'],
        "```typescript\nimport { Circle } from './shapes';\n\ndescribe('Circle', () => {\n"
        "  it('has an area', () => {\n    expect(new Circle(1).area()).toBeCloseTo(Math.PI);\n"
        "  });\n});\n```",
    ),
    "tsx": (
        "Button.tsx",
        "Button",
        "Button.test.tsx",
        ['import { Button } from "./Button";\n'],
        "```tsx\ntest('renders', () => {\n"
        '  expect(<Button label="ok" />).toBeTruthy();\n});\n```',
    ),
    "go": (
        "geometry/shapes.go",
        "NewCircle",
        "geometry/shapes_test.go",
        ["package geometry\n", 'import "testing"\n'],
        '```go\npackage main\n\nimport (\n\t"fmt"\n\t"testing"\n)\n\n'
        "func NewCircle(r float64) *Circle { return nil }\n\n"
        "func TestNewCircle(t *testing.T) {\n\tif NewCircle(2).Radius != 2 {\n"
        '\t\tt.Errorf("radius")\n\t}\n}\n\nfunc TestArea(t *testing.T)',
    ),
    "java": (
        "src/geo/Circle.java",
        "Circle.area",
        "src/test/java/geo/CircleTest.java",
        ["package geo;\n", "import org.junit.jupiter.api.Test;\n", "class CircleTest {\n"],
        "```java\nimport org.junit.Test;\nimport static org.junit.Assert.assertEquals;\n\n"
        "public class CircleTest {\n    @Test\n    public void area() {\n"
        "        assertEquals(Math.PI, new Circle(1).area(), 1e-9);\n    }\n\n"
        "    @Test\n    public void zero() {\n        assertEquals(0.0, new Circle(0",
    ),
    "c": (
        "shapes.c",
        "rect_area",
        "tests/test_shapes.c",
        ["#include <assert.h>\n", '#include "../shapes.h"\n', "    test_rect_area();\n"],
        '```c\n#include <assert.h>\n#include "shapes.h"\n\nstatic void test_rect_area(void) {\n'
        "    assert(rect_area(2, 3) == 6);\n}\n\nint main(void) {\n    test_rect_area();\n}\n```",
    ),
    "cpp": (
        "shapes.cpp",
        "geo::Circle::area",
        "tests/test_shapes.cpp",
        ["#include <cassert>\n", '#include "../shapes.hpp"\n', "using namespace geo;\n"],
        "```cpp\n#include <cassert>\n\nvoid test_area() {\n    Circle c(1.0);\n"
        "    assert(c.area() > 3.0);\n}\n```",
    ),
}


@pytest.mark.parametrize("language", sorted(NEW_FILES))
def test_a_new_test_file_has_its_place_header_and_parses(tmp_path: Path, language: str):
    relative, name, expected, header, answer = NEW_FILES[language]
    root = copy_project(tmp_path, language)
    plan = plan_for(root, relative, name)
    assert plan.file == root / expected
    written = generate(plan, answer)
    for line in header:
        assert line in written
    assert written.count("\n" + header[-1]) <= 1 and written.endswith("\n")


def test_the_function_under_test_and_wrong_imports_stay_out(tmp_path: Path):
    python = generate(
        plan_for(copy_project(tmp_path, "python"), "shapes/geometry.py", "Circle.area"),
        NEW_FILES["python"][4],
    )
    assert "class Circle" not in python and "from geometry import" not in python
    assert "import math" in python and "def test_area" in python
    assert "def test_zero" not in python  # cut off mid-call
    go = generate(
        plan_for(copy_project(tmp_path, "go"), "geometry/shapes.go", "NewCircle"),
        NEW_FILES["go"][4],
    )
    assert "func NewCircle" not in go and "package main" not in go
    assert '"fmt"' not in go  # unused: Go would refuse to compile it
    assert "func TestArea" not in go  # a declaration without its body was cut off


def test_an_answer_without_a_test_that_parses_gives_nothing(tmp_path: Path):
    plan = plan_for(copy_project(tmp_path, "go"), "geometry/shapes.go", "NewCircle")
    assert testgen.assemble(plan, "```go\nfunc TestA(t *testing.T) {\n\tif x {\n", None) is None
    assert testgen.assemble(plan, "no code at all", None) is None
    script = plan_for(copy_project(tmp_path, "javascript"), "geometry.js", "area")
    assert testgen.assemble(script, "```js\nconst x = area(1, 2);\n```", None) is None


@pytest.mark.parametrize(
    ("manifest", "framework", "runner"),
    [
        (
            {"devDependencies": {"vitest": "^2.0.0"}},
            "Vitest",
            'import { describe, expect, it } from "vitest";\n',
        ),
        ({"devDependencies": {"jest": "^29.0.0"}}, "Jest", None),
    ],
)
def test_jest_or_vitest_from_package_json(tmp_path: Path, manifest, framework, runner):
    import json

    root = copy_project(tmp_path, "typescript")
    (root / "package.json").write_text(json.dumps(manifest))
    plan = plan_for(root, "geometry.ts", "area")
    assert plan.framework == framework
    written = generate(
        plan, "```ts\ndescribe('a', () => { it('b', () => { expect(1).toBe(1); }); });\n```"
    )
    if runner:
        assert written.startswith(runner)
    else:
        assert "vitest" not in written


def test_script_tests_follow_the_projects_existing_tests(tmp_path: Path):
    root = copy_project(tmp_path, "javascript")
    (root / "__tests__").mkdir()
    (root / "__tests__" / "util.spec.js").write_text(
        'import { expect, test } from "vitest";\n\ntest("x", () => expect(1).toBe(1));\n'
    )
    plan = plan_for(root, "geometry.js", "area")
    assert plan.file == root / "__tests__" / "geometry.spec.js"
    assert plan.framework == "Vitest"  # how the existing test imports its runner
    assert plan.imports == ('import { area } from "../geometry";',)


def test_commonjs_modules_are_required(tmp_path: Path):
    root = tmp_path / "cjs"
    root.mkdir()
    (root / "calc.js").write_text(
        "function add(a, b) { return a + b; }\nmodule.exports = { add };\n"
    )
    plan = plan_for(root, "calc.js", "add")
    assert plan.imports == ('const { add } = require("./calc");',)


def test_an_existing_go_test_file_is_extended_keeping_its_content(tmp_path: Path):
    root = copy_project(tmp_path, "go")
    existing = 'package geometry\n\nimport "testing"\n\nfunc TestOld(t *testing.T) {}\n'
    (root / "geometry" / "shapes_test.go").write_text(existing)
    plan = plan_for(root, "geometry/shapes.go", "NewCircle")
    written = generate(
        plan,
        '```go\nimport (\n\t"math"\n\t"testing"\n)\n\n'
        "func TestNew(t *testing.T) {\n\tif math.Abs(1) != 1 {\n\t\tt.Fail()\n\t}\n}\n```",
    )
    assert written.startswith('package geometry\n\nimport "testing"\nimport "math"\n')
    assert "func TestOld(t *testing.T) {}\n\nfunc TestNew" in written


RUST_ANSWER = (
    "```rust\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::geometry::area;\n\n"
    "    #[test]\n    fn multiplies() {\n        assert_eq!(area(2.0, 3.0), 6.0);\n    }\n}\n```"
)


def test_rust_tests_go_into_the_source_files_tests_module(tmp_path: Path):
    root = copy_project(tmp_path, "rust")
    source = root / "src" / "geometry.rs"
    original = source.read_text()
    plan = plan_for(root, "src/geometry.rs", "area")
    assert plan.file == source
    written = generate(plan, RUST_ANSWER, source)
    assert written.startswith(original)
    assert written[len(original) :] == (
        "\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn multiplies() {\n"
        "        assert_eq!(area(2.0, 3.0), 6.0);\n    }\n}\n"
    )
    source.write_text(written)  # a second round goes into the same module
    again = generate(
        plan_for(root, "src/geometry.rs", "area"), RUST_ANSWER.replace("multiplies", "zero"), source
    )
    assert again.count("mod tests") == 1 and again.startswith(written.rsplit("}", 1)[0])
    assert "    #[test]\n    fn zero()" in again


def test_rust_projects_with_a_tests_folder_get_an_integration_file(tmp_path: Path):
    root = copy_project(tmp_path, "rust")
    (root / "tests").mkdir()
    (root / "tests" / "smoke.rs").write_text("#[test]\nfn runs() {}\n")
    plan = plan_for(root, "src/geometry.rs", "area")
    assert plan.file == root / "tests" / "geometry.rs"
    written = generate(plan, RUST_ANSWER)
    assert written.startswith("use shapes::geometry::area;\n\n#[test]\nfn multiplies()")


def test_java_tests_mirror_the_main_package(tmp_path: Path):
    root = tmp_path / "maven"
    package = root / "src" / "main" / "java" / "com" / "acme"
    package.mkdir(parents=True)
    (package / "Calc.java").write_text(
        "package com.acme;\n\npublic class Calc {\n    public static int add(int a, int b) {\n"
        "        return a + b;\n    }\n}\n"
    )
    plan = plan_for(root, "src/main/java/com/acme/Calc.java", "Calc.add")
    assert plan.file == root / "src/test/java/com/acme/CalcTest.java"
    assert plan.preamble == "package com.acme;"


def test_an_existing_java_test_class_is_extended_and_followed(tmp_path: Path):
    root = copy_project(tmp_path, "java")
    existing_file = root / "test" / "geo" / "ShapeTest.java"
    existing_file.parent.mkdir(parents=True)
    (existing_file.parent / "CircleTest.java").write_text(
        "package geo;\n\nimport org.junit.jupiter.api.Test;\n\nclass CircleTest {\n"
        "    @Test\n    void old() {}\n}\n"
    )
    plan = plan_for(root, "src/geo/Circle.java", "Circle.area")
    assert plan.file == root / "test" / "geo" / "CircleTest.java"  # the project's test root
    written = generate(plan, NEW_FILES["java"][4])
    assert written.startswith(
        "package geo;\n\nimport org.junit.jupiter.api.Test;\n"
        "import static org.junit.jupiter.api.Assertions.*;\n"
    )
    assert "    @Test\n    void old() {}\n\n    @Test\n    public void area()" in written
    assert written.endswith("    }\n}\n") and written.count("class CircleTest") == 1


def test_an_existing_c_test_file_gets_functions_before_main_and_calls_in_it(tmp_path: Path):
    root = copy_project(tmp_path, "c")
    (root / "tests").mkdir()
    (root / "tests" / "test_shapes.c").write_text(
        '#include <assert.h>\n#include "../shapes.h"\n\nstatic void test_old(void) {}\n\n'
        "int main(void) {\n    test_old();\n    return 0;\n}\n"
    )
    written = generate(plan_for(root, "shapes.c", "rect_area"), NEW_FILES["c"][4])
    assert "static void test_old(void) {}\n\nstatic void test_rect_area(void)" in written
    assert "    test_old();\n    test_rect_area();\n    return 0;\n}\n" in written


def test_cpp_projects_using_googletest_get_test_blocks(tmp_path: Path):
    root = copy_project(tmp_path, "cpp")
    (root / "CMakeLists.txt").write_text("find_package(GTest REQUIRED)\n")
    plan = plan_for(root, "shapes.cpp", "geo::Circle::area")
    assert plan.framework == "GoogleTest" and plan.file == root / "tests" / "shapes_test.cpp"
    written = generate(
        plan,
        "```cpp\n#include <gtest/gtest.h>\n\nTEST(Circle, Area) {\n"
        "  EXPECT_NEAR(geo::Circle(1).area(), 3.14159, 1e-3);\n}\n```",
    )
    assert written.startswith('#include <gtest/gtest.h>\n#include "../shapes.hpp"\n')
    assert "TEST(Circle, Area)" in written and "int main" not in written


def test_python_keeps_the_project_layout(tmp_path: Path):
    root = copy_project(tmp_path, "python")
    assert plan_for(root, "app.py", "describe").file == root / "test_app.py"
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text("import os\n\n\ndef test_old():\n    pass\n")
    written = generate(
        plan_for(root, "app.py", "describe"), "```python\ndef test_new():\n    assert describe\n```"
    )
    assert written == (
        "import os\nfrom app import describe\n\n\ndef test_old():\n    pass\n\n\n"
        "def test_new():\n    assert describe\n"
    )


def test_the_prompt_shows_an_existing_test_file_as_the_style(tmp_path: Path):
    root = copy_project(tmp_path, "javascript")
    (root / "__tests__").mkdir()
    (root / "__tests__" / "util.spec.js").write_text('test("style marker", () => {});\n')
    plan = plan_for(root, "geometry.js", "area")
    assert "style marker" in example_tests(root, plan, project_files(root, root, None))
    rust = copy_project(tmp_path, "rust")
    plan = plan_for(rust, "src/geometry.rs", "area")
    assert example_tests(rust, plan, project_files(rust, rust, None)) == ""  # not the source


def test_a_test_cut_off_by_the_token_limit_keeps_its_complete_statements(tmp_path: Path):
    c = plan_for(copy_project(tmp_path, "c"), "shapes.c", "rect_area")
    repeated = "    assert(rect_area(1, 1) == 1);\n" * 3
    written = generate(c, f"```c\nstatic void test_rect_area() {{\n{repeated}    assert(rect_")
    assert f"static void test_rect_area() {{\n{repeated}}}\n" in written
    assert "    test_rect_area();\n" in written
    script = plan_for(copy_project(tmp_path, "javascript"), "geometry.js", "area")
    written = generate(
        script,
        "```js\ndescribe('area', () => {\n  it('multiplies', () => {\n"
        "    expect(area(2, 3)).toBe(6);\n    expect(area(",
    )
    assert "    expect(area(2, 3)).toBe(6);\n})\n})\n" in written
