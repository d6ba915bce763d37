"""The facts the CodeGraph keeps about a file. Positions are 0-based lines and columns in code
points (UTF-32); features convert them to the client's encoding."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    start_line: int
    start_col: int
    end_line: int
    end_col: int

    def contains(self, line: int, col: int) -> bool:
        after_start = (line, col) >= (self.start_line, self.start_col)
        return after_start and (line, col) <= (self.end_line, self.end_col)


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str
    """function, method, class, interface, struct, enum, type, variable, constant, field,
    module, macro, namespace, trait, impl."""
    span: Span
    """The whole definition."""
    name_span: Span
    signature: str
    """The declaration without its body, on one line (e.g. `def area(w: int, h: int) -> int`)."""
    doc: str = ""
    """Docstring, or the comment block right above the definition."""
    scope: str = ""
    """Qualified name of the enclosing definition ("Shape.area" for a method's scope "Shape")."""

    @property
    def qualified_name(self) -> str:
        return f"{self.scope}.{self.name}" if self.scope else self.name


@dataclass(frozen=True)
class Reference:
    name: str
    kind: str
    """call, type, attribute, identifier."""
    span: Span
    scope: str = ""
    """Qualified name of the enclosing definition, "" at module level."""


@dataclass(frozen=True)
class Import:
    module: str
    """As written: "os.path", "./util", "github.com/x/y", "crate::geometry", "stdio.h"."""
    names: tuple[str, ...] = ()
    """Names brought in (`from m import a, b`, `import {a, b} from "m"`, `use m::{a, b}`)."""
    alias: str = ""
    span: Span | None = None


@dataclass
class FileFacts:
    language: str
    definitions: list[Definition] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    has_errors: bool = False
    """tree-sitter found syntax errors; the facts are what could be read around them."""
