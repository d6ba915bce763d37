"""Rust tests: `#[test]` functions in the source file's `mod tests`, or in the crate's tests/."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import tree_sitter

from codeagent_lsp.actions.testgen.base import Insertion, Style, TestPlan, node_text, squash


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
            re.search(r"\btest\b", node_text(a)) for a in _attributes(node)
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
        found = {squash(node_text(n)) for n in body.named_children if n.type in self.import_types}
        missing = [i for i in imports if squash(i) not in found]
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
            and any("cfg(test)" in node_text(a).replace(" ", "") for a in _attributes(node))
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
