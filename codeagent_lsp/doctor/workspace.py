"""Workspace access: the roots (the editor's workspace folders, given with --root) and the extra
repositories of the settings are readable folders the policy lets the server index, and their
CodeGraph database is healthy. The database is opened read-only: the doctor repairs nothing."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from codeagent_lsp.codegraph.schema import SCHEMA_VERSION
from codeagent_lsp.codegraph.store import default_db_path
from codeagent_lsp.doctor.check import Check, Options

INDEX_FIX = "the server indexes at start; to index ahead: codeagent-lsp index ROOT"


def roots_of(options: Options) -> list[tuple[str, Path]]:
    """(repository name, folder) as the server labels them: by folder name, the workspace
    folders first, then codeagent.codegraph.extraRepositories."""
    paths = [*options.roots, *(Path(p) for p in options.settings.codegraph.extraRepositories)]
    return [(p.expanduser().resolve().name, p.expanduser().resolve()) for p in paths]


def workspace_checks(options: Options) -> Iterator[Check]:
    roots = roots_of(options)
    if not roots:
        yield Check(
            "workspace", "roots", "ok",
            "no roots given: pass --root for the folders editors will open",
        )  # fmt: skip
        return
    for repo, path in roots:
        yield root_check(repo, path, options)
    yield index_check(roots, options)


def root_check(repo: str, path: Path, options: Options) -> Check:
    name = f"root {repo}"
    if not path.is_dir():
        return Check("workspace", name, "fail", f"{path} is not a folder", "fix the path")
    try:
        entries = sum(1 for _ in os.scandir(path))
    except OSError as exc:
        return Check(
            "workspace", name, "fail", f"{path} cannot be read: {exc.strerror or exc}",
            "give the server's user read access to it",
        )  # fmt: skip
    if not options.policy.index.repository_allowed(repo):
        return Check(
            "workspace", name, "warn",
            f"{path} is readable, but the policy's [index] repositories leave {repo!r} out",
            "add it to [index] repositories, or remove the root",
        )  # fmt: skip
    return Check("workspace", name, "ok", f"{path} is readable ({entries} entries)")


def index_check(roots: list[tuple[str, Path]], options: Options) -> Check:
    """The database the server would open for these roots (named after the first)."""
    path = default_db_path(roots[0][1])
    if options.settings.codegraph.cacheDir:
        path = Path(options.settings.codegraph.cacheDir).expanduser() / path.name
    data: dict[str, object] = {"path": str(path)}
    if not path.is_file():
        return Check(
            "workspace", "index", "warn", f"not indexed yet ({path} does not exist)",
            INDEX_FIX, data,
        )  # fmt: skip
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            health = db.execute("PRAGMA quick_check").fetchone()[0]
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            counts = dict(db.execute("SELECT repo, count(*) FROM files GROUP BY repo").fetchall())
        finally:
            db.close()
    except sqlite3.Error as exc:
        return Check(
            "workspace", "index", "fail", f"{path} is not a readable index: {exc}",
            "the server moves a corrupt index aside and rebuilds it; or delete it", data,
        )  # fmt: skip
    data |= {"quickCheck": health, "schemaVersion": version and version[0], "files": counts}
    if health != "ok":
        return Check(
            "workspace", "index", "fail", f"{path} is damaged: {health}",
            "delete it: the server rebuilds it at start", data,
        )  # fmt: skip
    if version is None or str(version[0]) != str(SCHEMA_VERSION):
        return Check(
            "workspace", "index", "warn",
            f"{path} has schema {version and version[0]}, this version uses {SCHEMA_VERSION}",
            "nothing: the server rebuilds it at start", data,
        )  # fmt: skip
    missing = [repo for repo, _ in roots if not counts.get(repo)]
    if missing:
        return Check(
            "workspace", "index", "warn", f"{path} holds no file of {', '.join(missing)}",
            INDEX_FIX, data,
        )  # fmt: skip
    held = ", ".join(f"{repo} {counts[repo]} files" for repo, _ in roots)
    return Check("workspace", "index", "ok", f"{path} is intact: {held}", data=data)
