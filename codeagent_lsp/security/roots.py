"""Workspace roots, and which root (if any) holds a path: nothing outside them is read."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Root:
    repo: str
    path: Path
    """Absolute and resolved: what is walked and what reads are checked against."""
    given: Path
    """Absolute as given (maybe through a symlink): how an editor may name files in it."""

    @classmethod
    def of(cls, repo: str, path: Path | str) -> Root:
        return cls(repo, Path(path).expanduser().resolve(), Path(os.path.abspath(path)))


def locate(roots: Sequence[Root], path: Path | str) -> tuple[Root, str] | None:
    """The deepest root holding an absolute path, and the path relative to it (posix). A path
    through a symlinked folder counts where the folder really is; the file itself is not
    resolved (a link keeps its own name)."""
    absolute = Path(os.path.abspath(path))
    found = _deepest(roots, absolute)
    if found is None and absolute.parent != absolute:
        found = _deepest(roots, Path(os.path.realpath(absolute.parent)) / absolute.name)
    return found


def _deepest(roots: Sequence[Root], absolute: Path) -> tuple[Root, str] | None:
    best: tuple[Root, Path] | None = None
    for root in roots:
        for base in (root.path, root.given):
            if absolute.is_relative_to(base) and (
                best is None or len(base.parts) > len(best[1].parts)
            ):
                best = (root, base)
    if best is None or absolute == best[1]:
        return None
    return best[0], absolute.relative_to(best[1]).as_posix()


def link_names(folder: Path, rel: str) -> tuple[str, ...]:
    """A file's path in `folder` (posix, relative) and, when the file is a symlink to another
    file in that folder, that file's path too: what the link shows is that file's text, so a
    rule about either name applies to it."""
    path = folder / rel
    if not path.is_symlink():
        return (rel,)
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if real == base or not real.is_relative_to(base):
        return (rel,)  # a link out of the folder is never read (guard, indexer)
    return (rel, real.relative_to(base).as_posix())
