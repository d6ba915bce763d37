"""Policy and audit checks: where the policy comes from and whether it parses, the roles in
force for the user running the doctor and the denied paths; where the audit log is, whether it
can be written, `audit verify` on it, and whether prompts or code are stored."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from codeagent_lsp.doctor.check import Check, Options
from codeagent_lsp.security import audit
from codeagent_lsp.security.identity import os_identity
from codeagent_lsp.security.paths import DEFAULT_DENY
from codeagent_lsp.security.policy import ENV_VAR, SYSTEM_PATH, Policy, policy_path

POLICY_DOCS = "README: Policy, audit and redaction"


def policy_checks(options: Options) -> Iterator[Check]:
    policy = options.policy
    yield source_check(policy)
    if policy.locked:
        return
    yield roles_check(policy)
    yield denied_paths_check(policy)


def source_check(policy: Policy) -> Check:
    if policy.locked:
        return Check(
            "policy", "policy file", "fail", policy.locked,
            f"fix {policy.source}; `codeagent-lsp doctor --policy FILE` checks a new version "
            "before it is installed",
        )  # fmt: skip
    if policy.source is None:
        return Check(
            "policy", "policy file", "warn",
            f"no policy file (${ENV_VAR} is unset and {SYSTEM_PATH} is absent): the built-in "
            "defaults apply, every user may use every feature and no role is enforced",
            f"for a shared deployment write {SYSTEM_PATH} ({POLICY_DOCS})",
        )  # fmt: skip
    in_force = policy_path()
    if in_force is not None and policy.source == in_force:
        how = "the system file" if in_force == SYSTEM_PATH else f"${ENV_VAR}"
    else:  # an administrator checking a new version before installing it
        how = f"--policy (the server reads {in_force or 'no policy file'})"
    data = {"source": str(policy.source), "via": how}
    return Check("policy", "policy file", "ok", f"{policy.source} parses, via {how}", data=data)


def roles_check(policy: Policy) -> Check:
    identity = os_identity()
    names = policy.roles_of(identity)
    roles = {n: policy.roles[n] for n in names if n in policy.roles}
    data: dict[str, object] = {
        "user": identity.user,
        "groups": list(identity.groups),
        "roles": {n: {"features": list(r.features), "repositories": list(r.repositories)}
                  for n, r in roles.items()},
    }  # fmt: skip
    if not roles:
        return Check(
            "policy", "roles", "warn",
            f"user {identity.user} has no role: every request of theirs is refused",
            "add an [[assign]] for the user or a group, or set [defaults] role", data,
        )  # fmt: skip
    described = "; ".join(
        f"{n}: {', '.join(r.features)} on {', '.join(r.repositories)}" for n, r in roles.items()
    )
    return Check("policy", "roles", "ok", f"user {identity.user}: {described}", data=data)


def denied_paths_check(policy: Policy) -> Check:
    index_extra = [p for p in policy.index.deny if p not in DEFAULT_DENY]
    prompt_extra = [p for p in policy.prompt.deny if p not in DEFAULT_DENY]
    data = {
        "always": list(DEFAULT_DENY),
        "index": {"deny": index_extra, "allow": list(policy.index.allow),
                  "repositories": list(policy.index.repositories)},
        "prompt": {"deny": prompt_extra, "allow": list(policy.prompt.allow),
                   "repositories": list(policy.prompt.repositories)},
    }  # fmt: skip
    message = (
        f"{len(DEFAULT_DENY)} secret patterns always; index also denies "
        f"{', '.join(index_extra) or 'nothing more'}; prompts also deny "
        f"{', '.join(prompt_extra) or 'nothing more'}"
    )
    return Check("policy", "denied paths", "ok", message, data=data)


def audit_checks(options: Options) -> Iterator[Check]:
    rules = options.policy.audit
    path = rules.db_path()
    writable = writable_check(path)
    yield writable
    if writable.status == "ok" and path.exists():
        yield verify_check(path)
    stored = [what for what, on in (("prompts", rules.store_prompts), ("code", rules.store_code))
              if on]  # fmt: skip
    yield Check(
        "audit", "content",
        "ok",
        f"the log stores {' and '.join(stored)} in full: it holds source code, keep its access "
        "narrow" if stored else "the log stores hashes and counts only, no prompt or code",
        data={"storePrompts": rules.store_prompts, "storeCode": rules.store_code},
    )  # fmt: skip


def writable_check(path: Path) -> Check:
    """Whether the server can append to the log: an existing file takes a write lock (rolled
    back, no row written); a missing one needs a folder it can create it in."""
    data = {"path": str(path), "exists": path.exists()}
    fix = f"give the server's user write access there, or set [audit] db ({POLICY_DOCS})"
    if path.exists():
        try:
            db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5)
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            finally:
                db.close()
        except sqlite3.Error as exc:
            return Check("audit", "log", "fail", f"{path} cannot be written: {exc}", fix, data)
        return Check("audit", "log", "ok", f"{path} is writable", data=data)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        why = "is not a folder" if not folder.is_dir() else "is not writable"
        return Check("audit", "log", "fail", f"{path} cannot be created: {folder} {why}", fix, data)
    return Check("audit", "log", "ok", f"{path} will be created at the first request", data=data)


def verify_check(path: Path) -> Check:
    try:
        verdict = audit.verify(path)
    except sqlite3.Error as exc:
        return Check(
            "audit", "verify", "fail", f"{path} is not a readable audit log: {exc}",
            "move it aside (the server starts a new log) and keep it for investigation",
        )  # fmt: skip
    data = {"rows": verdict.rows, "head": verdict.head}
    if not verdict.ok:
        return Check(
            "audit", "verify", "fail",
            f"row {verdict.bad_id}: {verdict.problem} ({verdict.rows} rows before it verified)",
            "keep the file for investigation and compare it with the SIEM's copy "
            "(codeagent-lsp audit export)", data,
        )  # fmt: skip
    return Check(
        "audit", "verify", "ok",
        f"{verdict.rows} rows, chain intact; head {verdict.head[:16]}", data=data,
    )  # fmt: skip
