"""Which open documents the server serves: file URIs inside the workspace roots, of a sane size.

A client names documents by URI, and every feature reads the document and often its folder: a
URI is the one input that could point the server at files it must not read. Checked here, once,
for every request (`CodeagentServer.open_document`), and told to the user when a document is
opened or changed (so a refused document is refused politely, not with a silent empty answer).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from codeagent_lsp.security import fileuri
from codeagent_lsp.security.roots import Root, locate


def uri_refusal(uri: str, roots: Sequence[Root]) -> str | None:
    """Why the document at `uri` may not be served, or None. Without roots (a single file
    opened without a folder) only the URI itself is checked."""
    problem = fileuri.refusal(uri)
    if problem is not None:
        return problem
    if not roots:
        return None
    path = str(fileuri.path_of(uri))
    if locate(roots, path) is None:
        return "it is outside the workspace folders"
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(root.path) for root in roots):
        return "it is a symlink to a file outside the workspace folders"
    return None


def size_refusal(text: str, max_bytes: int) -> str | None:
    """Why a document's text is too large to serve, or None."""
    if len(text) * 4 <= max_bytes:  # UTF-8 needs at most 4 bytes a code point: no encoding
        return None
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size <= max_bytes:
        return None
    return f"it is {size:,} bytes, over the limit of {max_bytes:,} (codeagent.documents.maxBytes)"
