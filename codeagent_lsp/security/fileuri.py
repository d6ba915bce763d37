"""A document's identity: one normal form of a `file:` URI, used everywhere a document is looked
up or keyed (open documents, KV-cache slots, CodeGraph paths, policy globs, audit rows).

Editors spell the same file differently: `file:///home/u/my%20dir/a.py` (VS Code encodes
everything but letters, digits and `-._~/`), `file:///home/u/my%20dir/a+b@c.py` (Neovim keeps
`+` and `@`), `%C3%A9` or `%c3%a9`, `file://localhost/...`. The normal form is the decoded
absolute path. Replies name a file open in the editor the way the client spelled it (some
clients compare URIs as strings).

Windows drive-letter URIs (`file:///c%3A/...`) name no file on this machine (the server runs
on Linux and macOS): they have no path, and `refusal` says so.
"""

from __future__ import annotations

import re
from pathlib import PurePath, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

_DRIVE = re.compile(r"/?[A-Za-z]:(/|$)")
_LOCAL_HOSTS = ("", "localhost")


def refusal(uri: str) -> str | None:
    """Why `uri` names no local file this server can read, or None."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        return f"only file: URIs are served, not {parts.scheme or 'a relative URI'}"
    if parts.netloc.lower() not in _LOCAL_HOSTS:
        return f"a file on another host ({parts.netloc}) is not served"
    try:
        decoded = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        return "the path's %-escapes are not UTF-8"
    if drive := _DRIVE.match(decoded):
        letter = drive.group().strip("/")
        return f"a Windows drive-letter path ({letter}) is not a file on this machine"
    if "\0" in decoded:
        return "the path holds a NUL character"
    if ".." in decoded.replace("\\", "/").split("/") or ".." in parts.path.split("/"):
        return "the path climbs out of its folder (..)"
    if not decoded.startswith("/"):
        return "the path is not absolute"
    return None


def path_of(uri: str) -> PurePosixPath | None:
    """The absolute path a `file:` URI names (percent-escapes decoded as UTF-8), or None when
    it names none (see `refusal`)."""
    if refusal(uri) is not None:
        return None
    return PurePosixPath(unquote(urlsplit(uri).path))


def document_key(uri: str) -> str:
    """The normal form of a document's identity: its path for a local file, else the URI with
    its escapes decoded (what pygls keys its open documents by)."""
    path = path_of(uri)
    return str(path) if path is not None else unquote(uri)


def uri_of(path: PurePath | str) -> str:
    """A `file:` URI for an absolute path, every character but `-._~/`, letters and digits
    escaped (as VS Code does; every client decodes it)."""
    return "file://" + quote(str(path), safe="/")
