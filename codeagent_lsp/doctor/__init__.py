"""`codeagent-lsp doctor`: the deployment checklist, checked by the server on the machine where
it will run. Each check says ok, warn or fail, one sentence, and the fix; any fail makes the
command exit non-zero.

One module per group of checks: `engine` (the llama.cpp build, the CPU, a short decode in a
worker process, the model), `security` (policy, audit), `network` (egress guard, interfaces,
inference replicas), `workspace` (roots, extra repositories, their index). Nothing here
changes what it checks: the audit log, the index and the model are only read.

Entry point: `run` (with `table` or `to_json`), from `cli`. May import `codegraph`, `context`,
`engine`, `security` and `settings`; never `features/`, `server`, pygls or lsprotocol.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from codeagent_lsp.doctor import engine, network, security, workspace
from codeagent_lsp.doctor.check import Check, Options


def run(options: Options, progress: Callable[[str], None] | None = None) -> list[Check]:
    """Every check, in the order of the checklist. Never raises for what it checks: a check
    that cannot run reports why."""
    groups: list[tuple[str, Callable[[Options], Iterable[Check]]]] = [
        ("engine", engine.engine_checks),
        ("model", engine.model_checks),
        ("policy", security.policy_checks),
        ("audit", security.audit_checks),
        ("network", network.network_checks),
        ("workspace", workspace.workspace_checks),
    ]
    checks: list[Check] = []
    for name, group in groups:
        if progress is not None:
            progress(f"checking {name}...")
        checks.extend(group(options))
    return checks


def exit_status(checks: list[Check]) -> int:
    """1 when any check failed, else 0 (warnings pass)."""
    return 1 if any(c.status == "fail" for c in checks) else 0


def to_json(checks: list[Check]) -> str:
    """One JSON object: the overall status, counts by status and every check."""
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    overall = "fail" if counts["fail"] else "warn" if counts["warn"] else "ok"
    return json.dumps(
        {"status": overall, "counts": counts, "checks": [c.to_json() for c in checks]}
    )


def table(checks: list[Check]) -> str:
    """A short table: status, group, check, sentence; the fix on the line below."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.status.upper():<4}  {c.group:<9}  {c.name:<{width}}  {c.message}")
        if c.fix and c.status != "ok":
            lines.append(f"{'':<4}  {'':<9}  {'':<{width}}  fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    lines.append(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    return "\n".join(lines)
