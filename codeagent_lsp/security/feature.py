"""Feature names, spelled once: what the policy grants and the audit log's rows name."""

from __future__ import annotations

from enum import StrEnum


class Feature(StrEnum):
    """Every feature name the policy decides and the audit log records: the one spelling."""

    COMPLETION = "completion"
    HOVER = "hover"
    NAVIGATION = "navigation"
    EXPLAIN = "explain"
    TESTS = "tests"
    FIX = "fix"
    DOCSTRING = "docstring"
    NEXTEDIT = "nextedit"
    INDEX = "index"
    STATS = "stats"
    ACTIONS = "actions"
    """The code action list: audited, never refused (it is cut to the actions one may use)."""
    NETWORK = "network"
    """A connection the egress guard refused: audited only."""
