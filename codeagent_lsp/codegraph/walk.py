"""The workspace walker shared by the CodeGraph's indexer and the asset index: the files under a
root that git would not ignore, in a stable order.

Git's rules: the deepest .gitignore with a matching pattern decides, a `!` pattern re-includes,
.git/info/exclude ranks below every .gitignore. Symlinked folders are never entered (what they
point at inside a root is walked anyway, and following them invites loops); symlinked files are
yielded or skipped as the caller says (`file_links`), for the caller to check their target.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pathspec import GitIgnoreSpec

from codeagent_lsp.security.roots import Root

log = logging.getLogger(__name__)


class GitIgnores:
    """The ignore files of the roots, read once each (`clear` to read them again)."""

    def __init__(self) -> None:
        self._specs: dict[Path, GitIgnoreSpec | None] = {}

    def clear(self) -> None:
        self._specs.clear()

    def ignored(self, root: Path, rel: str, *, is_dir: bool) -> bool:
        """Whether git ignores `rel` (posix, relative to `root`)."""
        probe = rel + "/" if is_dir else rel
        parts = rel.split("/")
        specs = [(root / ".git" / "info" / "exclude", "")]
        specs += [
            (root.joinpath(*parts[:depth], ".gitignore"), "/".join(parts[:depth]))
            for depth in range(len(parts))
        ]
        decision: bool | None = None
        for ignore_file, base in specs:
            spec = self._spec(ignore_file)
            if spec is None:
                continue
            include = spec.check_file(probe[len(base) + 1 :] if base else probe).include
            if include is not None:
                decision = include
        return bool(decision)

    def _spec(self, ignore_file: Path) -> GitIgnoreSpec | None:
        if ignore_file not in self._specs:
            try:
                lines = ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
                self._specs[ignore_file] = GitIgnoreSpec.from_lines(lines)
            except OSError:  # no such file, mostly
                self._specs[ignore_file] = None
        return self._specs[ignore_file]


def walk(
    root: Root,
    start: str,
    *,
    roots: list[Root],
    dir_excluded: Callable[[str], bool],
    file_links: bool,
) -> Iterator[str]:
    """Paths (relative to `root`, posix) of the files under `start` ("" for the root), sorted
    by name folder by folder; folders `dir_excluded` refuses and folders holding another of
    `roots` (left to that root) are not entered. Every entry that is not a folder is yielded,
    symlinked files only when `file_links`; the caller filters the files."""
    nested = {r.path for r in roots if r.path != root.path}
    pending = [start]
    while pending:
        rel_dir = pending.pop()
        directory = root.path / rel_dir if rel_dir else root.path
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            log.debug("cannot list %s: %s", directory, exc)
            continue
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                if file_links and not Path(entry.path).is_dir():
                    yield rel
            elif entry.is_dir():
                if Path(entry.path) not in nested and not dir_excluded(rel):
                    subdirs.append(rel)
            else:
                yield rel
        pending.extend(reversed(subdirs))
