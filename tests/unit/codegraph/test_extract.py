"""CodeGraph extraction: what the queries in codeagent_lsp/codegraph/queries/ find in the fixture
projects (tests/fixtures/projects/<language>/), positions in code points, and files that are
broken, not UTF-8 or large."""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path

import pytest
import tree_sitter

from codeagent_lsp.codegraph import languages
from codeagent_lsp.codegraph.extract import extract, parse
from codeagent_lsp.codegraph.model import Definition, FileFacts
from tests.conftest import PROJECTS

LANGUAGES = ("python", "javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp")


@cache
def project(language: str) -> dict[str, tuple[str, FileFacts]]:
    """Every source file of a fixture project: relative path -> (text, facts)."""
    root = PROJECTS / language
    files: dict[str, tuple[str, FileFacts]] = {}
    for path in sorted(root.rglob("*")):
        if languages.language_for(path) is None:
            continue
        source = path.read_bytes()
        files[path.relative_to(root).as_posix()] = (
            source.decode(),
            extract(source, languages.language_for(path) or ""),
        )
    return files


def facts(language: str, file: str) -> FileFacts:
    return project(language)[file][1]


def definition(language: str, file: str, qualified_name: str, kind: str) -> Definition:
    found = [
        d
        for d in facts(language, file).definitions
        if d.qualified_name == qualified_name and d.kind == kind
    ]
    known = [(d.qualified_name, d.kind) for d in facts(language, file).definitions]
    assert len(found) == 1, f"{qualified_name} ({kind}) in {file}: {known}"
    return found[0]


# (file, qualified name, kind, signature, doc)
DEFINITIONS: dict[str, list[tuple[str, str, str, str, str]]] = {
    "python": [
        ("shapes/geometry.py", "PI_ISH", "constant", "PI_ISH = 3.14", ""),
        ("shapes/geometry.py", "unit_name", "variable", 'unit_name = "cm"', ""),
        (
            "shapes/geometry.py",
            "area",
            "function",
            "def area(w: int, h: int) -> int",
            "Area of a w by h rectangle.",
        ),
        (
            "shapes/geometry.py",
            "Shape",
            "class",
            "class Shape",
            "A named shape on the plane.\nSubclasses override area().",
        ),
        ("shapes/geometry.py", "Shape.sides", "field", "sides: int = 0", ""),
        (
            "shapes/geometry.py",
            "Shape.__init__",
            "method",
            "def __init__(self, name: str) -> None",
            "",
        ),
        (
            "shapes/geometry.py",
            "Shape.area",
            "method",
            "def area(self) -> float",
            "Area in square units.\n\nZero for an abstract shape.",
        ),
        ("shapes/geometry.py", "Circle", "class", "class Circle(Shape)", ""),
        ("shapes/geometry.py", "Circle.diameter", "method", "def diameter(self) -> float", ""),
        ("shapes/geometry.py", "Circle.area", "method", "def area(self) -> float", ""),
        # The comment inside the function is neither its doc nor part of its signature.
        ("app.py", "describe", "function", "def describe(c: Circle) -> str", ""),
        (
            "shapes/__init__.py",
            "__all__",
            "variable",
            '__all__ = ["Circle", "Shape", "rect_area"]',
            "",
        ),
    ],
    "javascript": [
        ("geometry.js", "PI_ISH", "constant", "const PI_ISH = 3.14", "Approximate value of pi."),
        (
            "geometry.js",
            "area",
            "function",
            "function area(w, h)",
            "Area of a w by h rectangle.\n@param {number} w",
        ),
        (
            "geometry.js",
            "perimeter",
            "function",
            "const perimeter = (w, h) =>",
            "Perimeter of a w by h rectangle.",
        ),
        ("geometry.js", "Shape", "class", "class Shape", ""),
        ("geometry.js", "Shape.sides", "field", "sides = 0", ""),
        ("geometry.js", "Shape.constructor", "method", "constructor(name)", ""),
        ("geometry.js", "Shape.area", "method", "area()", "Area in square units."),
        ("geometry.js", "Circle", "class", "class Circle extends Shape", ""),
        ("geometry.js", "Circle.area", "method", "area()", ""),
        (
            "util.js",
            "label",
            "function",
            "function label(name, value)",
            "Formats a labelled number.",
        ),
        ("app.js", "main", "function", "function main()", ""),
    ],
    "typescript": [
        ("geometry.ts", "Shape", "interface", "interface Shape", "Anything with an area."),
        ("geometry.ts", "Shape.name", "field", "readonly name: string", ""),
        ("geometry.ts", "Shape.area", "method", "area(): number", ""),
        ("geometry.ts", "Point", "type", "type Point = { x: number; y: number }", ""),
        ("geometry.ts", "Color", "enum", "enum Color", ""),
        ("geometry.ts", "Color.Red", "constant", "Red", ""),
        (
            "geometry.ts",
            "area",
            "function",
            "function area(w: number, h: number): number",
            "Area of a w by h rectangle.",
        ),
        ("geometry.ts", "Base", "class", "abstract class Base implements Shape", ""),
        ("geometry.ts", "Base.area", "method", "abstract area(): number", ""),
        ("geometry.ts", "Circle", "class", "class Circle extends Base", ""),
        ("geometry.ts", "Circle.color", "field", "private color: Color = Color.Red", ""),
        (
            "geometry.ts",
            "Circle.constructor",
            "method",
            "constructor(public radius: number, public center?: Point)",
            "",
        ),
        ("geometry.ts", "Circle.area", "method", "area(): number", "Area in square units."),
        ("geometry.ts", "Units", "namespace", "namespace Units", ""),
        ("geometry.ts", "Units.CM", "constant", 'const CM = "cm"', ""),
        ("app.ts", "total", "function", "function total(shapes: Shape[]): number", ""),
    ],
    "tsx": [
        ("Button.tsx", "ButtonProps", "interface", "interface ButtonProps", ""),
        ("Button.tsx", "ButtonProps.onClick", "field", "onClick?: () => void", ""),
        (
            "Button.tsx",
            "Button",
            "function",
            "function Button({ label, onClick }: ButtonProps)",
            "A plain button.",
        ),
        (
            "Button.tsx",
            "Counter",
            "class",
            "class Counter extends React.Component<{}, { n: number }>",
            "",
        ),
        ("Button.tsx", "Counter.state", "field", "state = { n: 0 }", ""),
        ("Button.tsx", "Counter.increment", "method", "increment(): void", ""),
        ("Button.tsx", "Counter.render", "method", "render()", ""),
        ("App.tsx", "App", "function", "const App = () =>", ""),
    ],
    "go": [
        ("geometry/shapes.go", "Pi", "constant", "const Pi = 3.14159", "Pi to a few places."),
        ("geometry/shapes.go", "Unit", "variable", 'var Unit = "cm"', ""),
        (
            "geometry/shapes.go",
            "Shape",
            "interface",
            "type Shape interface",
            "Shape is anything with an area.",
        ),
        ("geometry/shapes.go", "Shape.Area", "method", "Area() float64", ""),
        (
            "geometry/shapes.go",
            "Circle",
            "struct",
            "type Circle struct",
            "Circle is a round shape.",
        ),
        ("geometry/shapes.go", "Circle.Radius", "field", "Radius float64", ""),
        # Specs of a `type (...)` group stand alone.
        ("geometry/shapes.go", "Meters", "type", "Meters float64", ""),
        ("geometry/shapes.go", "Point", "struct", "Point struct", ""),
        ("geometry/shapes.go", "Point.Y", "field", "X, Y float64", ""),
        (
            "geometry/shapes.go",
            "NewCircle",
            "function",
            "func NewCircle(r float64) *Circle",
            "NewCircle makes a circle of radius r.",
        ),
        (
            "geometry/shapes.go",
            "Circle.Area",
            "method",
            "func (c *Circle) Area() float64",
            "Area returns the area in square units.",
        ),
        ("main.go", "describe", "function", "func describe(s geo.Shape) string", ""),
    ],
    "rust": [
        (
            "src/geometry.rs",
            "PI_ISH",
            "constant",
            "pub const PI_ISH: f64 = 3.14",
            "Pi to a few places.",
        ),
        ("src/geometry.rs", "Meters", "type", "pub type Meters = f64", ""),
        ("src/geometry.rs", "Shape", "trait", "pub trait Shape", "Anything with an area."),
        ("src/geometry.rs", "Shape.area", "method", "fn area(&self) -> f64", ""),
        ("src/geometry.rs", "Shape.name", "method", "fn name(&self) -> String", ""),
        # The doc comment is above `#[derive(...)]`.
        ("src/geometry.rs", "Circle", "struct", "pub struct Circle", "A round shape."),
        ("src/geometry.rs", "Circle.radius", "field", "pub radius: Meters", ""),
        ("src/geometry.rs", "Color", "enum", "pub enum Color", ""),
        ("src/geometry.rs", "Color.Green", "constant", "Green", ""),
        (
            "src/geometry.rs",
            "Circle.new",
            "method",
            "pub fn new(r: Meters) -> Self",
            "Makes a circle of radius `r`.",
        ),
        ("src/geometry.rs", "Circle.area", "method", "fn area(&self) -> f64", ""),
        (
            "src/geometry.rs",
            "area",
            "function",
            "pub fn area(w: f64, h: f64) -> f64",
            "Area of a w by h rectangle.",
        ),
        ("src/geometry.rs", "square", "macro", "macro_rules! square", ""),
        ("src/lib.rs", "geometry", "module", "pub mod geometry", ""),
        ("src/main.rs", "main", "function", "fn main()", ""),
    ],
    "java": [
        (
            "src/geo/Shape.java",
            "Shape",
            "interface",
            "public interface Shape",
            "Anything with an area.",
        ),
        ("src/geo/Shape.java", "Shape.area", "method", "double area()", ""),
        ("src/geo/Shape.java", "Shape.name", "method", "default String name()", ""),
        (
            "src/geo/Circle.java",
            "Circle",
            "class",
            "public class Circle implements Shape",
            "A round shape.",
        ),
        (
            "src/geo/Circle.java",
            "Circle.UNIT",
            "constant",
            'public static final String UNIT = "cm"',
            "",
        ),
        ("src/geo/Circle.java", "Circle.radius", "field", "private final double radius", ""),
        ("src/geo/Circle.java", "Circle.Circle", "method", "public Circle(double radius)", ""),
        (
            "src/geo/Circle.java",
            "Circle.area",
            "method",
            "@Override public double area()",
            "Area in square units.",
        ),
        ("src/geo/Circle.java", "Circle.Color", "enum", "public enum Color", ""),
        ("src/geo/Circle.java", "Circle.Color.RED", "constant", "RED", ""),
        (
            "src/app/Main.java",
            "Main.total",
            "method",
            "static double total(List<Shape> shapes)",
            "",
        ),
    ],
    "c": [
        ("shapes.h", "PI_ISH", "macro", "#define PI_ISH 3.14159", "Pi to a few places."),
        ("shapes.h", "SQUARE", "macro", "#define SQUARE(x) ((x) * (x))", ""),
        (
            "shapes.h",
            "Circle",
            "struct",
            "typedef struct { double radius; } Circle",
            "A round shape.",
        ),
        ("shapes.h", "Circle.radius", "field", "double radius", ""),
        ("shapes.h", "Shape", "struct", "struct Shape", ""),
        ("shapes.h", "Shape.area", "field", "double (*area)(const struct Shape *self)", ""),
        ("shapes.h", "Color", "enum", "enum Color", ""),
        ("shapes.h", "Color.RED", "constant", "RED", ""),
        (
            "shapes.h",
            "circle_area",
            "function",
            "double circle_area(const Circle *c)",
            "Area of a circle.",
        ),
        ("shapes.c", "shape_count", "variable", "int shape_count = 0", ""),
        (
            "shapes.c",
            "rect_area",
            "function",
            "double rect_area(double w, double h)",
            "Area of a w by h rectangle.",
        ),
        (
            "main.c",
            "shape_area",
            "function",
            "static double shape_area(const struct Shape *s)",
            "",
        ),
    ],
    "cpp": [
        ("shapes.hpp", "geo", "namespace", "namespace geo", ""),
        ("shapes.hpp", "geo.Shape", "class", "class Shape", "Anything with an area."),
        ("shapes.hpp", "geo.Shape.~Shape", "method", "virtual ~Shape() = default", ""),
        ("shapes.hpp", "geo.Shape.area", "method", "virtual double area() const = 0", ""),
        ("shapes.hpp", "geo.Shape.name", "method", "std::string name() const", ""),
        ("shapes.hpp", "geo.Real", "type", "using Real = double", ""),
        ("shapes.hpp", "geo.Circle", "class", "class Circle : public Shape", "A round shape."),
        ("shapes.hpp", "geo.Circle.Circle", "method", "explicit Circle(Real radius)", ""),
        ("shapes.hpp", "geo.Circle.radius_", "field", "Real radius_", ""),
        ("shapes.hpp", "geo.Point.dot", "method", "Real dot(const Point &o) const", ""),
        ("shapes.hpp", "geo.square", "function", "T square(T x)", ""),
        ("shapes.cpp", "geo.kPi", "constant", "constexpr double kPi = 3.14159", ""),
        # Out of line: the class comes from `Circle::`, the namespace from around it.
        (
            "shapes.cpp",
            "geo.Circle.Circle",
            "method",
            "Circle::Circle(Real radius) : radius_(radius)",
            "",
        ),
        (
            "shapes.cpp",
            "geo.Circle.area",
            "method",
            "double Circle::area() const",
            "Area in square units.",
        ),
        ("main.cpp", "main", "function", "int main()", ""),
    ],
}

# Names that must not be definitions: locals, and the `require` binding's call.
NOT_DEFINED: dict[str, list[tuple[str, str]]] = {
    "python": [("app.py", "c")],
    "javascript": [("app.js", "c")],
    "typescript": [("app.ts", "sum")],
    "tsx": [("App.tsx", "shown"), ("App.tsx", "setShown")],
    "go": [("main.go", "c")],
    "rust": [("src/main.rs", "c"), ("src/main.rs", "areas")],
    "java": [("src/app/Main.java", "sum"), ("src/app/Main.java", "c")],
    "c": [("main.c", "c"), ("main.c", "sq")],
    "cpp": [("main.cpp", "c"), ("main.cpp", "p")],
}

# (file, name, kind, scope)
REFERENCES: dict[str, list[tuple[str, str, str, str]]] = {
    "python": [
        ("app.py", "rect_area", "call", "main"),
        ("app.py", "Circle", "call", "main"),
        ("app.py", "Circle", "type", "describe"),
        ("app.py", "area", "call", "describe"),
        ("app.py", "name", "attribute", "describe"),
        ("app.py", "PI_ISH", "attribute", "main"),
        ("app.py", "main", "call", ""),
        ("shapes/geometry.py", "Shape", "type", "Circle"),
        ("shapes/geometry.py", "__init__", "call", "Circle.__init__"),
        ("shapes/geometry.py", "radius", "attribute", "Circle.area"),
    ],
    "javascript": [
        ("app.js", "area", "call", "main"),
        ("app.js", "C", "call", "main"),
        ("app.js", "perimeter", "call", "main"),
        ("app.js", "radius", "attribute", "main"),
        ("geometry.js", "Shape", "type", "Circle"),
        ("util.js", "format", "call", "label"),
    ],
    "typescript": [
        ("app.ts", "Circle", "call", ""),
        ("app.ts", "Circle", "type", ""),
        ("app.ts", "Shape", "type", "total"),
        ("app.ts", "area", "call", "total"),
        ("app.ts", "total", "call", ""),
        ("geometry.ts", "Shape", "type", "Base"),
        ("geometry.ts", "Base", "type", "Circle"),
        ("geometry.ts", "Point", "type", "Circle.constructor"),
        ("geometry.ts", "Red", "attribute", "Circle"),
    ],
    "tsx": [
        ("App.tsx", "Button", "call", "App"),
        ("App.tsx", "Counter", "call", "App"),
        ("App.tsx", "useState", "call", "App"),
        ("Button.tsx", "Button", "call", "Counter.render"),
        ("Button.tsx", "increment", "call", "Counter.render"),
        ("Button.tsx", "ButtonProps", "type", "Button"),
        ("Button.tsx", "Component", "type", "Counter"),
    ],
    "go": [
        ("main.go", "NewCircle", "call", "main"),
        ("main.go", "Area", "call", "describe"),
        ("main.go", "Shape", "type", "describe"),
        ("main.go", "Unit", "attribute", "describe"),
        ("geometry/shapes.go", "Circle", "type", "NewCircle"),
        ("geometry/shapes.go", "Radius", "attribute", "Circle.Area"),
    ],
    "rust": [
        ("src/main.rs", "Circle", "type", "main"),
        ("src/main.rs", "new", "call", "main"),
        ("src/main.rs", "area", "call", "main"),
        ("src/main.rs", "rect_area", "call", "main"),
        ("src/main.rs", "println", "call", "main"),
        ("src/geometry.rs", "Shape", "type", "Circle"),
        ("src/geometry.rs", "Meters", "type", "Circle.new"),
        ("src/geometry.rs", "radius", "attribute", "Circle.area"),
    ],
    "java": [
        ("src/app/Main.java", "Circle", "call", "Main.main"),
        ("src/app/Main.java", "Circle", "type", "Main.main"),
        ("src/app/Main.java", "area", "call", "Main.total"),
        ("src/app/Main.java", "total", "call", "Main.main"),
        ("src/app/Main.java", "UNIT", "attribute", "Main.main"),
        ("src/app/Main.java", "Math", "type", "Main.main"),
        ("src/geo/Circle.java", "Shape", "type", "Circle"),
        ("src/geo/Circle.java", "requireNonNull", "call", "Circle.Circle"),
    ],
    "c": [
        ("main.c", "circle_area", "call", "main"),
        ("main.c", "rect_area", "call", "main"),
        ("main.c", "area", "call", "shape_area"),
        ("main.c", "Circle", "type", "main"),
        ("main.c", "name", "attribute", "main"),
        ("shapes.c", "SQUARE", "call", "circle_area"),
        ("shapes.c", "radius", "attribute", "circle_area"),
    ],
    "cpp": [
        ("main.cpp", "area", "call", "main"),
        ("main.cpp", "dot", "call", "main"),
        ("main.cpp", "square", "call", "main"),
        ("main.cpp", "Circle", "type", "main"),
        ("shapes.cpp", "square", "call", "geo.Circle.area"),
        ("shapes.hpp", "Shape", "type", "geo.Circle"),
        ("shapes.hpp", "x", "attribute", "geo.Point.dot"),
    ],
}

# A name used in one file and defined in another: (referring file, name, defining file).
CROSS_FILE: dict[str, list[tuple[str, str, str]]] = {
    "python": [
        ("app.py", "Circle", "shapes/geometry.py"),
        ("app.py", "area", "shapes/geometry.py"),
    ],
    "javascript": [("app.js", "area", "geometry.js"), ("app.js", "perimeter", "geometry.js")],
    "typescript": [("app.ts", "Circle", "geometry.ts"), ("app.ts", "area", "geometry.ts")],
    "tsx": [("App.tsx", "Button", "Button.tsx"), ("App.tsx", "Counter", "Button.tsx")],
    "go": [
        ("main.go", "NewCircle", "geometry/shapes.go"),
        ("main.go", "Area", "geometry/shapes.go"),
    ],
    "rust": [("src/main.rs", "new", "src/geometry.rs"), ("src/main.rs", "area", "src/geometry.rs")],
    "java": [
        ("src/app/Main.java", "Circle", "src/geo/Circle.java"),
        ("src/app/Main.java", "area", "src/geo/Shape.java"),
    ],
    "c": [("main.c", "circle_area", "shapes.c"), ("main.c", "rect_area", "shapes.h")],
    "cpp": [("main.cpp", "area", "shapes.cpp"), ("main.cpp", "square", "shapes.hpp")],
}

# (file, module, names, alias)
IMPORTS: dict[str, list[tuple[str, str, tuple[str, ...], str]]] = {
    "python": [
        ("app.py", "os.path", (), ""),
        ("app.py", "shapes.geometry", (), "geo"),
        ("app.py", "shapes", ("Circle", "rect_area"), ""),
        # The re-export.
        ("shapes/__init__.py", ".geometry", ("Circle", "Shape"), ""),
        ("shapes/__init__.py", ".geometry", ("area",), "rect_area"),
        ("shapes/geometry.py", "__future__", ("annotations",), ""),
    ],
    "javascript": [
        ("app.js", "./index.js", ("area", "rectPerimeter"), ""),
        ("app.js", "./index.js", ("Circle",), "C"),
        ("app.js", "./geometry.js", ("*",), "geo"),
        ("app.js", "./geometry.js", ("default",), "defaultShape"),
        ("app.js", "./util.js", (), ""),
        ("index.js", "./geometry.js", ("area", "Circle"), ""),
        ("index.js", "./geometry.js", ("perimeter",), "rectPerimeter"),
        ("index.js", "./util.js", ("*",), ""),
        ("util.js", "path", (), "path"),
        ("util.js", "util", ("format",), ""),
    ],
    "typescript": [
        ("app.ts", "./index", ("Circle", "area"), ""),
        ("app.ts", "./geometry", ("Shape",), ""),
        ("app.ts", "fs", (), "fs"),
        ("index.ts", "./geometry", ("Circle", "area"), ""),
        ("index.ts", "./geometry", ("Shape", "Point"), ""),
        ("index.ts", "./geometry", ("*",), "geometry"),
    ],
    "tsx": [
        ("App.tsx", "react", ("default",), "React"),
        ("App.tsx", "react", ("useState",), ""),
        ("App.tsx", "./index", ("Button", "Counter"), ""),
        ("index.tsx", "./Button", ("Button", "Counter"), ""),
        ("index.tsx", "./Button", ("ButtonProps",), ""),
    ],
    "go": [
        ("main.go", "fmt", (), ""),
        ("main.go", "example.com/shapes/geometry", (), "geo"),
        ("main.go", "embed", (), "_"),
        ("geometry/shapes.go", "math", (), ""),
    ],
    "rust": [
        ("src/lib.rs", "geometry", ("Circle", "Shape"), ""),
        ("src/lib.rs", "geometry", ("area",), "rect_area"),
        ("src/main.rs", "shapes", ("rect_area", "Circle"), ""),
        ("src/main.rs", "shapes", ("Shape",), "_"),
        ("src/main.rs", "std::collections", ("HashMap",), ""),
        ("src/geometry.rs", "std::fmt", ("self", "Display"), ""),
    ],
    "java": [
        ("src/app/Main.java", "geo", ("Circle",), ""),
        ("src/app/Main.java", "geo", ("*",), ""),
        ("src/app/Main.java", "java.util", ("List",), ""),
        ("src/geo/Circle.java", "java.lang.Math", ("PI",), ""),
    ],
    "c": [
        ("main.c", "stdio.h", (), ""),
        ("main.c", "shapes.h", (), ""),
        ("shapes.c", "math.h", (), ""),
        ("shapes.h", "stddef.h", (), ""),
    ],
    "cpp": [
        ("main.cpp", "iostream", (), ""),
        ("main.cpp", "shapes.hpp", (), ""),
        ("shapes.hpp", "string", (), ""),
    ],
}


def test_every_language_has_a_fixture_project_and_expectations() -> None:
    assert languages.supported_languages() == LANGUAGES
    for table in (DEFINITIONS, NOT_DEFINED, REFERENCES, CROSS_FILE, IMPORTS):
        assert set(table) == set(LANGUAGES)
    for language in LANGUAGES:
        assert 2 <= len(project(language)) <= 4, language


@pytest.mark.parametrize("language", LANGUAGES)
def test_fixture_files_parse_cleanly(language: str) -> None:
    for file, (_, found) in project(language).items():
        assert found.language == language, file
        assert not found.has_errors, file


@pytest.mark.parametrize("language", LANGUAGES)
def test_definitions(language: str) -> None:
    for file, name, kind, signature, doc in DEFINITIONS[language]:
        found = definition(language, file, name, kind)
        assert (found.signature, found.doc) == (signature, doc), (file, name)
    for file, name in NOT_DEFINED[language]:
        assert name not in {d.name for d in facts(language, file).definitions}, (file, name)


@pytest.mark.parametrize("language", LANGUAGES)
def test_references(language: str) -> None:
    for file, name, kind, scope in REFERENCES[language]:
        found = {(r.name, r.kind, r.scope) for r in facts(language, file).references}
        assert (name, kind, scope) in found, (file, name, kind, scope, sorted(found))


@pytest.mark.parametrize("language", LANGUAGES)
def test_calls_across_files(language: str) -> None:
    for user, name, owner in CROSS_FILE[language]:
        assert name in {r.name for r in facts(language, user).references}, (user, name)
        assert name in {d.name for d in facts(language, owner).definitions}, (owner, name)


@pytest.mark.parametrize("language", LANGUAGES)
def test_imports(language: str) -> None:
    for file, module, names, alias in IMPORTS[language]:
        found = [(i.module, i.names, i.alias) for i in facts(language, file).imports]
        assert (module, names, alias) in found, (file, found)


@pytest.mark.parametrize("language", LANGUAGES)
def test_spans_point_at_the_names(language: str) -> None:
    for file, (text, found) in project(language).items():
        lines = text.split("\n")
        named = [(d.name, d.name_span) for d in found.definitions]
        named += [(r.name, r.span) for r in found.references]
        for name, span in named:
            assert span.start_line == span.end_line, (file, name)
            assert lines[span.start_line][span.start_col : span.end_col] == name, (file, name)
        for d in found.definitions:
            assert d.span.contains(d.name_span.start_line, d.name_span.start_col), (file, d)
        for i in found.imports:
            assert i.span is not None and i.module in lines[i.span.start_line], (file, i)


# A line with text outside ASCII (2- and 4-byte UTF-8) before a call of `area`.
NON_ASCII: dict[str, str] = {
    "python": 'def f():\n    s = "héllo 😀"; return area(s)\n',
    "javascript": 'function f() {\n  const s = "héllo 😀"; return area(s);\n}\n',
    "typescript": 'function f(): number {\n  const s: string = "héllo 😀"; return area(s);\n}\n',
    "tsx": 'function f() {\n  const s = "héllo 😀"; return <b>{area(s)}</b>;\n}\n',
    "go": 'package p\n\nfunc f() int {\n\ts := "héllo 😀"; return area(s)\n}\n',
    "rust": 'fn f() -> i32 {\n    let s = "héllo 😀"; area(s)\n}\n',
    "java": 'class A {\n  int f() { String s = "héllo 😀"; return area(s); }\n}\n',
    "c": 'int f(void) {\n    const char *s = "héllo 😀"; return area(s);\n}\n',
    "cpp": 'int f() {\n    const char *s = "héllo 😀"; return area(s);\n}\n',
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_columns_count_code_points(language: str) -> None:
    text = NON_ASCII[language]
    found = extract(text.encode(), language)
    calls = [r for r in found.references if r.name == "area"]
    assert len(calls) == 1
    span = calls[0].span
    line = text.split("\n")[span.start_line]
    assert line[span.start_col : span.end_col] == "area"
    assert line.encode().index(b"area") > span.start_col  # bytes would be further right


def test_non_ascii_names() -> None:
    text = "class Ünïcode:\n    def naïve(self): return 1\n"
    found = extract(text.encode(), "python")
    method = next(d for d in found.definitions if d.kind == "method")
    assert (method.qualified_name, method.name_span.start_col) == ("Ünïcode.naïve", 8)
    assert method.span.end_col == len("    def naïve(self): return 1")


# A broken function followed by a good one.
BROKEN: dict[str, bytes] = {
    "python": b"def broken():\n    x = (1 +\n\ndef good():\n    return 1\n",
    "javascript": b"function broken() {\n  let x = 1 +;\n}\n\nfunction good() { return 1; }\n",
    "typescript": b"function broken(): number {\n  let x = 1 +;\n}\n\n"
    b"function good() { return 1; }\n",
    "tsx": b"function broken() {\n  return <div>;\n}\n\nfunction good() { return 1; }\n",
    "go": b"package p\n\nfunc broken() {\n\tx := 1 +\n}\n\nfunc good() int { return 1 }\n",
    "rust": b"fn broken() {\n    let x = 1 +;\n}\n\nfn good() -> i32 { 1 }\n",
    "java": b"class A {\n  void broken() {\n    int x = 1 +;\n  }\n  int good() { return 1; }\n}\n",
    "c": b"int broken(void) {\n    int x = 1 +;\n}\n\nint good(void) { return 1; }\n",
    "cpp": b"int broken() {\n    int x = 1 +;\n}\n\nint good() { return 1; }\n",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_syntax_errors_keep_what_can_be_read(language: str) -> None:
    found = extract(BROKEN[language], language)
    assert found.has_errors
    assert {"broken", "good"} <= {d.name for d in found.definitions}


@pytest.mark.parametrize("language", LANGUAGES)
def test_invalid_utf8_does_not_crash(language: str) -> None:
    # Invalid bytes in a string and in the comment above `good`; then the same definitions as
    # the broken file.
    lines = BROKEN[language].replace(b"1 +", b'"\xff\xfe" +', 1).split(b"\n")
    at = next(n for n, line in enumerate(lines) if b"good" in line)
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    marker = b"#" if language == "python" else b"//"
    lines.insert(at, indent + marker + b" caf\xe9 \xc3")
    found = extract(b"\n".join(lines), language)
    good = next(d for d in found.definitions if d.name == "good")
    assert good.doc == "caf\ufffd \ufffd"


def test_a_5mb_python_file_extracts() -> None:
    block = (
        "\n\nclass Shape{i}(Base):\n"
        '    """Shape number {i}."""\n\n'
        "    def area(self, w: int) -> int:\n"
        "        return helper{i}(w) + self.scale\n\n\n"
        "def helper{i}(w: int) -> int:\n"
        "    return w * 2\n\n\n"
        "TABLE_{i} = [{row}]\n"
    )
    row = ", ".join(str(n) for n in range(150))
    blocks = 6100
    source = "".join(block.format(i=i, row=row) for i in range(blocks)).encode()
    assert len(source) > 5_000_000
    found = extract(source, "python")
    assert not found.has_errors
    assert len(found.definitions) == blocks * 4
    last = found.definitions[-1]
    assert (last.name, last.kind, last.name_span.start_line) == (
        f"TABLE_{blocks - 1}",
        "constant",
        source.count(b"\n") - 1,
    )
    assert sum(r.name == "helper17" for r in found.references) == 1


def test_incremental_parse_matches_a_fresh_one() -> None:
    before = b"def area(w, h):\n    return w * h\n"
    after = b"def area(w, h):\n    return scale(w) * h\n"
    tree = parse(before, "python")
    start = before.index(b"w * h")
    # `w` -> `scale(w)`: 1 byte replaced by 8, on line 1.
    tree.edit(start, start + 1, start + 8, (1, 11), (1, 12), (1, 19))
    reparsed = parse(after, "python", old_tree=tree)
    assert extract(after, "python", reparsed) == extract(after, "python")
    assert [r.name for r in extract(after, "python", reparsed).references] == ["scale"]


def test_language_table() -> None:
    assert languages.language_for("src/app.py") == "python"
    assert languages.language_for(Path("Button.TSX")) == "tsx"
    assert languages.language_for("shapes.h") == "c"
    assert languages.language_for("shapes.hpp") == "cpp"
    assert languages.language_for("README.md") is None
    assert languages.language_for("Makefile") is None
    for name in LANGUAGES:
        assert isinstance(languages.language(name), tree_sitter.Language)
        for kind in languages.QUERY_KINDS:
            assert languages.query(name, kind).pattern_count > 0 or kind == "imports"
    with pytest.raises(ValueError, match="unsupported language"):
        languages.parser_for("cobol")


def test_parsers_are_per_thread() -> None:
    here = languages.parser_for("go")
    assert languages.parser_for("go") is here
    elsewhere: list[tree_sitter.Parser] = []
    thread = threading.Thread(target=lambda: elsewhere.append(languages.parser_for("go")))
    thread.start()
    thread.join()
    assert elsewhere[0] is not here
