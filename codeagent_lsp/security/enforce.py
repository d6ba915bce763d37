"""The one enforcement helper: a request is decided by the policy and written to the audit log,
the same way for the language server's gate (`server.guarded`) and the headless commands
(`cli._audited`); and the one way to open the audit log."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from codeagent_lsp.security import audit
from codeagent_lsp.security.audit import AuditLog
from codeagent_lsp.security.feature import Feature
from codeagent_lsp.security.identity import Identity
from codeagent_lsp.security.policy import Decision, Policy


class Refused(Exception):
    """The request may not run; the message is the reason (already written to the log)."""


def open_audit_log(policy: Policy) -> AuditLog:
    """The audit log the policy's [audit] table describes (its writer thread starts here)."""
    rules = policy.audit
    return AuditLog(
        rules.db_path(),
        store_prompts=rules.store_prompts,
        store_code=rules.store_code,
        fail_closed=rules.on_failure == "refuse",
    )


@contextlib.contextmanager
def enforced(
    policy: Policy,
    log: AuditLog,
    identity: Identity,
    feature: str,
    file: tuple[str | None, str | None] = (None, None),
    model_sha256: str | None = None,
) -> Iterator[audit.Row]:
    """Run the block as `feature` on `file` ((repository, posix path inside it)) for
    `identity`, or raise Refused. The block gets the request's audit row (to note prompt and
    response hashes); the row is written when the block ends, with its outcome and latency,
    and a refusal is written before Refused is raised."""
    repository, path = file
    row = audit.new_row(identity, feature, repository, path)
    row.model_sha256 = model_sha256
    decision = _decide(policy, log, identity, feature, repository, path)
    if not decision.allowed:
        audit.deny(log, row, decision.reason)
        raise Refused(decision.reason)
    with audit.recording(log, row):
        yield row


def _decide(
    policy: Policy,
    log: AuditLog,
    identity: Identity,
    feature: str,
    repository: str | None,
    path: str | None,
) -> Decision:
    refusal = log.refusal()  # fail closed: nothing runs unaudited
    if refusal:
        return Decision(False, refusal)
    if feature == Feature.ACTIONS:  # the list sends nothing to the model (cut by the server)
        return Decision(True)
    return policy.decide(identity, feature, repository, path)
