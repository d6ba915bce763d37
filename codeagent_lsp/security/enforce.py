"""Where the policy is enforced: the one way to open the audit log."""

from __future__ import annotations

from codeagent_lsp.security.audit import AuditLog
from codeagent_lsp.security.policy import Policy


def open_audit_log(policy: Policy) -> AuditLog:
    """The audit log the policy's [audit] table describes (its writer thread starts here)."""
    rules = policy.audit
    return AuditLog(
        rules.db_path(),
        store_prompts=rules.store_prompts,
        store_code=rules.store_code,
        fail_closed=rules.on_failure == "refuse",
    )
