"""The administrator's policy: who may use which feature on which repository, which files may
be indexed or sent to the model, which models may be loaded, and how the audit log is kept.

The file is TOML, read once at start from $CODEAGENT_POLICY, else /etc/codeagent-lsp/policy.toml;
never from the workspace or the client, which the policy governs. Without a file the defaults
below apply. A file that cannot be read or is invalid does not make the server permissive: it
gives a *locked* policy that refuses every request with the reason (and the server says so).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import stat
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeagent_lsp.security.egress import endpoint_of
from codeagent_lsp.security.feature import Feature
from codeagent_lsp.security.identity import Identity
from codeagent_lsp.security.paths import PathPolicy

ENV_VAR = "CODEAGENT_POLICY"
SYSTEM_PATH = Path("/etc/codeagent-lsp/policy.toml")


FEATURES = tuple(f.value for f in Feature if f not in (Feature.ACTIONS, Feature.NETWORK))
"""The features a role may be granted."""
MODEL_FEATURES = frozenset(
    {
        Feature.COMPLETION,
        Feature.EXPLAIN,
        Feature.TESTS,
        Feature.FIX,
        Feature.DOCSTRING,
        Feature.NEXTEDIT,
    }
)
"""Features that send a file's text to the model: the prompt path rules apply to them."""
BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    "admin": ("*",),
    "member": FEATURES,
    "viewer": (Feature.HOVER, Feature.NAVIGATION, Feature.INDEX, Feature.STATS),
    "auditor": (Feature.STATS,),
}
DEFAULT_ROLE = "member"
"""The role of everyone when there is no policy file (one developer on their own machine)."""


class PolicyError(Exception):
    """The policy file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class Role:
    features: tuple[str, ...]
    repositories: tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class Assignment:
    role: str
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Token:
    name: str
    sha256: str
    user: str
    groups: tuple[str, ...] = ()
    role: str = ""


@dataclass(frozen=True)
class PathRules:
    repositories: tuple[str, ...] = ("*",)
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def path_policy(self, extra_deny: tuple[str, ...] = ()) -> PathPolicy:
        """Secrets (DEFAULT_DENY) are always denied: these rules only add to them, and
        `extra_deny` (a client's codegraph.exclude) adds to both and re-admits nothing."""
        return PathPolicy(deny=self.deny, allow=self.allow, also_deny=extra_deny)

    def repository_allowed(self, repository: str | None) -> bool:
        return _matches(repository or "", self.repositories)


@dataclass(frozen=True)
class AuditRules:
    db: str = ""
    """Empty: $XDG_STATE_HOME/codeagent-lsp/audit.sqlite3."""
    store_prompts: bool = False
    store_code: bool = False
    on_failure: str = "refuse"
    """refuse: while rows cannot be written, requests are refused with the reason (fail
    closed); continue: they are served and the failure is logged (best effort)."""

    def db_path(self) -> Path:
        if self.db:
            return Path(self.db).expanduser()
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(state) / "codeagent-lsp" / "audit.sqlite3"


@dataclass(frozen=True)
class CacheRules:
    """[cache]: what the engine may keep on disk. Parked KV slots hold source code."""

    park_kv_slots: bool = True
    park_max_age_hours: float = 0.0
    """0: no age cap beyond the user's own (engine.parkMaxAgeHours)."""


@dataclass(frozen=True)
class Policy:
    source: Path | None = None
    """The file it was read from; None: the built-in defaults."""
    default_role: str = DEFAULT_ROLE
    roles: dict[str, Role] = field(
        default_factory=lambda: {name: Role(f) for name, f in BUILTIN_ROLES.items()}
    )
    assignments: tuple[Assignment, ...] = ()
    tokens: tuple[Token, ...] = ()
    index: PathRules = PathRules()
    prompt: PathRules = PathRules()
    model_sha256: tuple[str, ...] = ()
    """Models that may be loaded; empty: any."""
    model_paths: tuple[str, ...] = ()
    """Globs of the (resolved) files models may be loaded from; empty: anywhere."""
    audit: AuditRules = AuditRules()
    cache: CacheRules = CacheRules()
    inference_urls: tuple[str, ...] = ()
    """Inference services off this machine that may be contacted ([network] inference): the
    only connections the process may open besides loopback; empty: none."""
    inference_token_file: str = ""
    """File holding the bearer token sent to inference services ([network] token_file): the
    administrator's, never a client's; empty: no token is sent."""
    allow_env_policy: bool = False
    """[defaults] allow_env_policy: may $CODEAGENT_POLICY name another file instead of this
    one? Read from the system policy only."""
    locked: str = ""
    """Why every request is refused (the policy file is unusable); empty when it is not."""

    # --- identity -------------------------------------------------------------------------------

    def identity_for_token_hash(self, sha256_hex: str, transport: str) -> Identity | None:
        """The identity a bearer token stands for, given the hex sha256 of the token; None for
        an unknown token (or any token while the policy is locked)."""
        if self.locked:
            return None
        for token in self.tokens:
            if token.sha256 == sha256_hex.lower():
                return Identity(token.user, token.groups, transport, token_name=token.name)
        return None

    def roles_of(self, identity: Identity) -> tuple[str, ...]:
        roles = [t.role for t in self.tokens if t.role and t.name == identity.token_name]
        for rule in self.assignments:
            if identity.user in rule.users or set(identity.groups) & set(rule.groups):
                roles.append(rule.role)
        if not roles and self.default_role:
            roles.append(self.default_role)
        return tuple(dict.fromkeys(roles))

    # --- decisions ------------------------------------------------------------------------------

    def decide(
        self,
        identity: Identity,
        feature: str,
        repository: str | None = None,
        path: str | None = None,
    ) -> Decision:
        """May `identity` use `feature` on `path` (relative to `repository`, posix)?"""
        if self.locked:
            return Decision(False, self.locked)
        roles = [self.roles[name] for name in self.roles_of(identity) if name in self.roles]
        if not roles:
            return Decision(False, f"no role for user {identity.user!r} in {self._where()}")
        if not any("*" in r.features or feature in r.features for r in roles):
            names = ", ".join(self.roles_of(identity))
            return Decision(False, f"role {names} may not use {feature} ({self._where()})")
        if repository is not None and not any(_matches(repository, r.repositories) for r in roles):
            return Decision(
                False,
                f"repository {repository!r} is not open to user "
                f"{identity.user!r} ({self._where()})",
            )
        if feature in MODEL_FEATURES and path is not None and not self.may_prompt(repository, path):
            return Decision(False, f"{path} may not be sent to the model ({self._where()})")
        return Decision(True)

    def repository_open(self, identity: Identity, repository: str) -> Decision:
        """May `identity` use `repository` at all (any of its roles lists it)?"""
        if self.locked:
            return Decision(False, self.locked)
        roles = [self.roles[name] for name in self.roles_of(identity) if name in self.roles]
        if any(_matches(repository, r.repositories) for r in roles):
            return Decision(True)
        return Decision(
            False,
            f"repository {repository!r} is not open to user {identity.user!r} ({self._where()})",
        )

    def may_prompt(self, repository: str | None, path: str) -> bool:
        """May this file's text be put in a prompt?"""
        return self.prompt.repository_allowed(repository) and self.prompt_paths.allowed(path)

    @functools.cached_property
    def prompt_paths(self) -> PathPolicy:
        return self.prompt.path_policy()

    def model_path_allowed(self, path: Path) -> Decision:
        """Checked before the file is even hashed: a model outside the allowed folders is not
        read at all."""
        if self.locked:
            return Decision(False, self.locked)
        real = str(path.resolve())
        if self.model_paths and not any(fnmatch.fnmatchcase(real, p) for p in self.model_paths):
            return Decision(False, f"the model {real} is outside the paths {self._where()} allows")
        return Decision(True)

    def model_allowed(self, sha256_hex: str) -> Decision:
        if self.locked:
            return Decision(False, self.locked)
        if self.model_sha256 and sha256_hex.lower() not in self.model_sha256:
            return Decision(
                False, f"the model (sha256 {sha256_hex}) is not allowed by {self._where()}"
            )
        return Decision(True)

    def _where(self) -> str:
        return f"policy {self.source}" if self.source else "the default policy"


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


# --- loading ------------------------------------------------------------------------------------


def policy_path() -> Path | None:
    """The system file when it exists, unless it allows $CODEAGENT_POLICY to name another
    (`[defaults] allow_env_policy = true`); else $CODEAGENT_POLICY when set; else None. A user
    cannot slip their own policy under an administrator's."""
    configured = os.environ.get(ENV_VAR, "").strip()
    system = SYSTEM_PATH if SYSTEM_PATH.exists() else None
    if configured and (system is None or load_policy(system).allow_env_policy):
        return Path(configured).expanduser()
    return system


@functools.cache
def policy_in_force() -> Policy:
    """The policy of this process: read once, at first use."""
    return load_policy()


def load_policy(path: Path | None = None) -> Policy:
    """The policy in force: parsed from `path` (default: policy_path()), the defaults when there
    is no file, a locked policy when the file is unusable. Never raises."""
    path = path or policy_path()
    if path is None:
        return Policy()
    try:
        return parse(path)
    except PolicyError as exc:
        return Policy(
            source=path, locked=f"{exc}; every request is refused until an administrator fixes it"
        )


def parse(path: Path) -> Policy:
    unsafe = unsafe_file(path)
    if unsafe:
        raise PolicyError(f"the policy file {path} is not trusted: {unsafe}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read the policy file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"the policy file {path} is not valid TOML: {exc}") from exc
    reader = _Reader(path)
    reader.keys(
        data,
        "",
        {
            "defaults",
            "roles",
            "assign",
            "token",
            "index",
            "prompt",
            "models",
            "audit",
            "cache",
            "network",
        },
    )
    roles = {name: Role(f) for name, f in BUILTIN_ROLES.items()}
    for name, table in reader.table(data, "roles").items():
        where = f"roles.{name}"
        table = reader.table({name: table}, name, where)
        reader.keys(table, where, {"features", "repositories"})
        features = reader.strings(table, "features", where, ())
        unknown = [f for f in features if f != "*" and f not in FEATURES]
        if unknown:
            reader.fail(f"{where}.features: unknown feature(s) {unknown}; known: {FEATURES}")
        roles[name] = Role(features, reader.strings(table, "repositories", where, ("*",)))
    defaults = reader.table(data, "defaults")
    reader.keys(defaults, "defaults", {"role", "allow_env_policy"})
    default_role = reader.string(defaults, "role", "defaults", "")
    model_sha256, model_paths = _models(reader, data)
    policy = Policy(
        source=path,
        default_role=default_role,
        roles=roles,
        assignments=tuple(
            _assignment(reader, t, i) for i, t in enumerate(reader.array(data, "assign"))
        ),
        tokens=tuple(_token(reader, t, i) for i, t in enumerate(reader.array(data, "token"))),
        index=_path_rules(reader, data, "index"),
        prompt=_path_rules(reader, data, "prompt"),
        model_sha256=model_sha256,
        model_paths=model_paths,
        audit=_audit(reader, data),
        cache=_cache(reader, data),
        inference_urls=_inference_urls(reader, data),
        inference_token_file=_network(reader, data).get("token_file", ""),
        allow_env_policy=reader.boolean(defaults, "allow_env_policy", "defaults"),
    )
    for what in ("name", "sha256"):  # rights follow the name: a twin would get the other's
        # Names that read alike (`CI`, `ci`, the same letters full-width) are one name to
        # whoever reads the audit log: they count as the same.
        values = [_folded(getattr(t, what)) for t in policy.tokens]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            reader.fail(f"[[token]] {what} {twice} appears more than once; each must be unique")
    named = [policy.default_role] if policy.default_role else []
    named += [a.role for a in policy.assignments] + [t.role for t in policy.tokens if t.role]
    missing = sorted({r for r in named if r not in roles})
    if missing:
        reader.fail(f"undefined role(s) {missing}; defined: {sorted(roles)}")
    return policy


def unsafe_file(path: Path) -> str:
    """Why a file someone else could change is not to be trusted, or empty when it is trusted
    (or missing: reading it says so). Every step of the way to it counts, as sudo and OpenSSH
    check: each folder, each symlink (one of a folder's too) and the file itself must be owned
    by root or this process's user, no folder may be writable by its group or by everyone
    unless it is sticky (/tmp: others cannot rename what they do not own), and the file may not
    be writable by its group or by everyone."""
    trusted = {0, os.geteuid()}
    # Not abspath: it drops `..` before the symlinks it follows are known.
    current, pending = Path("/"), list((Path.cwd() / path).parts[1:])
    hops = 0
    while True:
        try:
            info = current.lstat()
        except OSError:
            return ""
        if info.st_uid not in trusted:
            what = "a symlink on its way" if stat.S_ISLNK(info.st_mode) else "it"
            what = "a folder on its way" if stat.S_ISDIR(info.st_mode) and pending else what
            return f"{what} ({current}) is owned by another user (uid {info.st_uid})"
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > 40:  # as the kernel allows
                return "too many symlinks"
            target = Path(os.readlink(current))
            pending = [*target.parts, *pending]
            current = current.parent
        elif not pending:
            writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            return f"{current} is writable by its group or by everyone" if writable else ""
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            return f"a folder on its way ({current}) is writable by its group or by everyone"
        current = _step(current, pending.pop(0))


def _step(folder: Path, name: str) -> Path:
    """One part of a path from a folder reached without symlinks: `/` restarts at the top."""
    if name == "/":
        return Path("/")
    return folder.parent if name == ".." else folder if name in ("", ".") else folder / name


def _folded(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold()


def _assignment(reader: _Reader, table: dict[str, Any], i: int) -> Assignment:
    where = f"assign[{i}]"
    reader.keys(table, where, {"role", "users", "groups"})
    role = reader.string(table, "role", where, "")
    if not role:
        reader.fail(f"{where}.role is required")
    return Assignment(
        role, reader.strings(table, "users", where, ()), reader.strings(table, "groups", where, ())
    )


def _token(reader: _Reader, table: dict[str, Any], i: int) -> Token:
    where = f"token[{i}]"
    reader.keys(table, where, {"name", "sha256", "user", "groups", "role"})
    name = reader.string(table, "name", where, "")
    digest = reader.string(table, "sha256", where, "").lower()
    if not name or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        reader.fail(f"{where} needs a name and the sha256 (64 hex digits) of the token")
    return Token(
        name,
        digest,
        reader.string(table, "user", where, name),
        reader.strings(table, "groups", where, ()),
        reader.string(table, "role", where, ""),
    )


def _path_rules(reader: _Reader, data: dict[str, Any], key: str) -> PathRules:
    table = reader.table(data, key)
    reader.keys(table, key, {"repositories", "allow", "deny"})
    return PathRules(
        reader.strings(table, "repositories", key, ("*",)),
        reader.strings(table, "allow", key, ()),
        reader.strings(table, "deny", key, ()),
    )


def _models(reader: _Reader, data: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(sha256 digests, path globs) of the models that may be loaded."""
    table = reader.table(data, "models")
    reader.keys(table, "models", {"sha256", "paths"})
    digests = tuple(d.lower() for d in reader.strings(table, "sha256", "models", ()))
    bad = [d for d in digests if len(d) != 64 or any(c not in "0123456789abcdef" for c in d)]
    if bad:
        reader.fail(f"models.sha256: not 64 hex digits: {bad}")
    paths = reader.strings(table, "paths", "models", ())
    relative = [p for p in paths if not p.startswith("/")]
    if relative:
        reader.fail(f"models.paths: globs must be absolute: {relative}")
    return digests, paths


def _network(reader: _Reader, data: dict[str, Any]) -> dict[str, Any]:
    table = reader.table(data, "network")
    reader.keys(table, "network", {"inference", "token_file"})
    reader.string(table, "token_file", "network", "")
    return table


def _inference_urls(reader: _Reader, data: dict[str, Any]) -> tuple[str, ...]:
    table = _network(reader, data)
    urls = reader.strings(table, "inference", "network", ())
    for url in urls:
        try:
            endpoint_of(url)
        except ValueError as exc:
            reader.fail(f"network.inference: {exc}")
    return urls


def _audit(reader: _Reader, data: dict[str, Any]) -> AuditRules:
    table = reader.table(data, "audit")
    reader.keys(table, "audit", {"db", "store_prompts", "store_code", "on_failure"})
    on_failure = reader.string(table, "on_failure", "audit", "refuse")
    if on_failure not in ("refuse", "continue"):
        reader.fail(f'audit.on_failure must be "refuse" or "continue", not {on_failure!r}')
    return AuditRules(
        reader.string(table, "db", "audit", ""),
        reader.boolean(table, "store_prompts", "audit"),
        reader.boolean(table, "store_code", "audit"),
        on_failure,
    )


def _cache(reader: _Reader, data: dict[str, Any]) -> CacheRules:
    table = reader.table(data, "cache")
    reader.keys(table, "cache", {"park_kv_slots", "park_max_age_hours"})
    park = table.get("park_kv_slots", True)
    if not isinstance(park, bool):
        reader.fail("cache.park_kv_slots must be true or false")
    age = table.get("park_max_age_hours", 0.0)
    if isinstance(age, bool) or not isinstance(age, int | float) or age < 0:
        reader.fail("cache.park_max_age_hours must be a number of hours, 0 or more")
    return CacheRules(park, float(age))


class _Reader:
    """Typed access to the parsed TOML, failing with the file and the key's path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str) -> None:
        raise PolicyError(f"the policy file {self.path} is invalid: {message}")

    def keys(self, table: dict[str, Any], where: str, allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            self.fail(f"unknown key(s) {unknown} in [{where or 'top level'}]")

    def table(self, data: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail(f"{where or key} must be a table")
        return value

    def array(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            self.fail(f"{key} must be an array of tables ([[{key}]])")
        return value

    def string(self, table: dict[str, Any], key: str, where: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            self.fail(f"{where}.{key} must be a string")
        return value

    def strings(
        self, table: dict[str, Any], key: str, where: str, default: tuple[str, ...]
    ) -> tuple[str, ...]:
        value = table.get(key, list(default))
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            self.fail(f"{where}.{key} must be a list of strings")
        return tuple(value)

    def boolean(self, table: dict[str, Any], key: str, where: str) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            self.fail(f"{where}.{key} must be true or false")
        return value
