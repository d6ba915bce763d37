"""Generated tests for every CodeGraph language: where the test file goes, which framework the
project uses, and how the model's answer becomes insertions that parse.

One path for all languages (`plan_tests` -> prompt -> `assemble`, in `planner`); what differs
is a small `Style` per language family in STYLES, one module each (python, script, go, rust,
java, native), over the shared types of `base`. Only whole test items (test functions,
`describe` blocks, `#[test]` functions, `@Test` methods) and the imports they need are taken
from the answer; the file's header (package clause, the framework's and the tested code's
imports) is written here, so a small model's wrong import path or its copy of the function
under test never reaches the file.
"""

from codeagent_lsp.actions.testgen.base import (
    Insertion,
    TestPlan,
    apply,
    looks_like_test,
    parse_errors,
)
from codeagent_lsp.actions.testgen.planner import STYLES, assemble, plan_tests, tests_request

__all__ = [
    "STYLES",
    "Insertion",
    "TestPlan",
    "apply",
    "assemble",
    "looks_like_test",
    "parse_errors",
    "plan_tests",
    "tests_request",
]
