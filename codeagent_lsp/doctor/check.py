"""What every group of checks takes (`Options`) and reports (`Check`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from codeagent_lsp.security.policy import Policy
from codeagent_lsp.settings import Settings

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the report: `group` (engine, model, policy, audit, network, workspace),
    `name`, `status`, one sentence, the fix (empty when there is nothing to do) and the
    figures behind it for --json (`data`)."""

    group: str
    name: str
    status: Status
    message: str
    fix: str = ""
    data: Mapping[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "fix": self.fix,
            "data": self.data,
        }


@dataclass(frozen=True)
class Options:
    settings: Settings
    policy: Policy
    remote_urls: tuple[str, ...] = ()
    """Inference replicas to check besides codeagent.remote.urls."""
    roots: tuple[Path, ...] = ()
    """The editor's workspace folders; codeagent.codegraph.extraRepositories are added."""
