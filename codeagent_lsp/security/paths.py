"""Which workspace files may be read into a prompt at all: the first rule of the security policy.

Patterns are gitignore-style (pathspec's GitIgnoreSpec): one without a slash matches a file or
folder name at any depth, and a matching folder covers everything below it. Matching ignores
case, because `.ENV` on a case-insensitive file system is the same file as `.env`.

DEFAULT_DENY always applies: `deny` adds to it and cannot take from it (a `!` pattern there
re-includes nothing it denies), `also_deny` (a client's settings) adds to both and takes from
neither, and `allow`, when given, only narrows what is left: a file must match one of its
patterns too. So no setting, and no typo in one, can make a key file readable.
"""

from __future__ import annotations

from collections.abc import Iterable

from pathspec import GitIgnoreSpec

DEFAULT_DENY: tuple[str, ...] = (
    ".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_ed25519*", "id_ecdsa*", "id_dsa*",
    "*.p12", "*.pfx", "*.keystore", "*.jks", ".netrc", ".npmrc", ".pypirc", "credentials*",
    "secrets.*", "*.secret*",
)  # fmt: skip
"""Files that hold credentials by convention: environment files, private keys, key stores,
package-registry tokens."""


class PathPolicy:
    def __init__(
        self,
        deny: Iterable[str] = DEFAULT_DENY,
        allow: Iterable[str] = (),
        also_deny: Iterable[str] = (),
    ) -> None:
        extra = [p for p in deny if p not in DEFAULT_DENY]
        self.deny: tuple[str, ...] = (*DEFAULT_DENY, *extra, *also_deny)
        self.allow: tuple[str, ...] = tuple(allow)
        # One spec per source: in a single spec a later `!pattern` could re-include what an
        # earlier source denies (a client's `!secrets.*`, the administrator's secrets).
        self._denies = [_spec(DEFAULT_DENY), _spec(extra), _spec(also_deny)]
        self._allow = _spec(self.allow) if self.allow else None

    def allowed(self, relative_posix_path: str) -> bool:
        """May this file (relative to its root, posix) be read? Denied when it, or any folder
        above it, matches a deny pattern; otherwise allowed unless `allow` leaves it out."""
        path = _normalise(relative_posix_path)
        if path is None or self._denied(path):
            return False
        return self._allow is None or self._allow.match_file(path)

    def allowed_dir(self, relative_posix_path: str) -> bool:
        """May a walk enter this folder? Only deny counts: `allow` patterns name files, and a
        folder they do not name may still hold some."""
        path = _normalise(relative_posix_path.rstrip("/"))
        # The trailing slash is how gitignore patterns such as `build/` tell a folder.
        return path is not None and not self._denied(path + "/")

    def _denied(self, path: str) -> bool:
        return any(spec.match_file(path) for spec in self._denies)


def _spec(patterns: Iterable[str]) -> GitIgnoreSpec:
    return GitIgnoreSpec.from_lines([p.lower() for p in patterns])


def _normalise(path: str) -> str | None:
    """Lower case, without a leading `./`; None for what is no relative path inside a root (an
    absolute path, `..`, a NUL), which nothing may read."""
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    parts = path.split("/")
    if not path or path.startswith("/") or ".." in parts or "\0" in path:
        return None
    return path.lower()
