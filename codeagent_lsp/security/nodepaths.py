"""A shared node's repositories, and how a client's workspace folders select among them.

On a node, no path comes from a client: the repositories are the folders directly under the
roots the administrator names (`--repositories DIR`), each known by its folder name. A client's
workspace folder only selects one by name (checked against its role); its URI stays the
client's. Each message from the client has the URIs under a selected folder rewritten to the
node's copy of the repository, and each message to it has the node's paths rewritten back, so
features see only the node's files and the client sees only its own paths. A folder that names
no repository of the node, or one its role may not use, selects nothing: documents under it are
outside the workspace.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from codeagent_lsp.security import fileuri

log = logging.getLogger(__name__)

URI_KEYS = frozenset({"uri", "targetUri", "scopeUri", "rootUri", "newUri", "oldUri"})
"""Keys whose string values are URIs in LSP messages (and in this server's action data)."""


def checked_roots(roots: list[Path]) -> tuple[Path, ...]:
    """The administrator's repository roots, resolved; ValueError names one that is no folder."""
    for root in roots:
        if not root.expanduser().is_dir():
            raise ValueError(f"--repositories {root}: not a folder")
    return tuple(root.expanduser().resolve() for root in roots)


def find(roots: tuple[Path, ...], name: str) -> Path | None:
    """The folder of repository `name`: `name` directly under the first root that has it.
    Looked up when a client asks, so a repository checked out later is found. A name that is
    not a plain folder name (a path, `..`, hidden) names none."""
    if not name or name != PurePosixPath(name).name or name.startswith(".") or "\\" in name:
        return None
    for root in roots:
        folder = root / name
        if folder.is_dir():
            return folder.resolve()
    return None


@dataclass
class FolderMap:
    """The selected repositories of one connection: client folder path -> node folder."""

    roots: tuple[Path, ...]
    """The administrator's repository roots (`checked_roots`)."""
    may_use: Callable[[str], str | None]
    """Repository name -> why the client's role may not use it, or None."""
    tell: Callable[[str], None] = lambda _message: None
    """Says to the client why a folder selects nothing."""
    selected: dict[PurePosixPath, tuple[str, Path]] = field(default_factory=dict)
    """Client folder path -> (repository name, node folder)."""

    # --- client -> node -------------------------------------------------------------------------

    def inbound(self, message: dict[str, Any]) -> dict[str, Any]:
        """The message with its workspace folders selected and its URIs on the node's paths."""
        params = message.get("params")
        if not isinstance(params, dict):
            return message
        method = message.get("method")
        if method == "initialize":
            params = self._initialize(params)
        elif method == "workspace/didChangeWorkspaceFolders":
            params = self._folders_changed(params)
        return {**message, "params": self._to_node(params)}

    def _initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        folders = params.get("workspaceFolders")
        if not isinstance(folders, list):  # a client without folders names one by rootUri
            root = params.get("rootUri")
            path = fileuri.path_of(root) if isinstance(root, str) else None
            folders = [{"uri": root, "name": path.name}] if path is not None else []
        chosen = [self._select(f) for f in folders if isinstance(f, dict)]
        # The node's folders replace the client's; rootPath/rootUri name none of its paths.
        return {**params, "workspaceFolders": [f for f in chosen if f], "rootUri": None,
                "rootPath": None}  # fmt: skip

    def _folders_changed(self, params: dict[str, Any]) -> dict[str, Any]:
        event = params.get("event")
        if not isinstance(event, dict):
            return params
        removed = [self._release(f) for f in _dicts(event.get("removed"))]
        added = [self._select(f) for f in _dicts(event.get("added"))]
        event = {"added": [f for f in added if f], "removed": [f for f in removed if f]}
        return {**params, "event": event}

    def _select(self, folder: dict[str, Any]) -> dict[str, str] | None:
        """The node's folder a client's workspace folder selects, as a WorkspaceFolder."""
        uri, name = folder.get("uri"), folder.get("name")
        path = fileuri.path_of(uri) if isinstance(uri, str) else None
        if path is None:
            why = fileuri.refusal(uri) if isinstance(uri, str) else "it has no URI"
            self.tell(f"workspace folder {str(name or uri)[:200]} is not served: {why}")
            return None
        repository = PurePosixPath(str(name or "")).name or path.name
        folder_on_node = find(self.roots, repository)
        refusal = (
            f"this node has no repository {repository!r}"
            if folder_on_node is None
            else self.may_use(repository)
        )
        if refusal is not None:
            self.tell(f"workspace folder {repository} is not served: {refusal}")
            return None
        assert folder_on_node is not None
        self.selected[path] = (repository, folder_on_node)
        return {"uri": folder_on_node.as_uri(), "name": repository}

    def _release(self, folder: dict[str, Any]) -> dict[str, str] | None:
        uri = folder.get("uri")
        path = fileuri.path_of(uri) if isinstance(uri, str) else None
        found = self.selected.pop(path, None) if path is not None else None
        return None if found is None else {"uri": found[1].as_uri(), "name": found[0]}

    def _to_node(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self._to_node(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._to_node(v, key) for v in value]
        if key in URI_KEYS and isinstance(value, str):
            return self.node_uri(value)
        return value

    def node_uri(self, uri: str) -> str:
        """A client's URI under a selected folder, on the node's copy; any other URI as it is
        (the server serves nothing outside the selected folders)."""
        path = fileuri.path_of(uri)
        if path is None:
            return uri
        for client_root, (_, node_root) in self.selected.items():
            if path.is_relative_to(client_root):
                return (node_root / path.relative_to(client_root)).as_uri()
        return uri

    # --- node -> client -------------------------------------------------------------------------

    def outbound(self, value: Any) -> Any:
        """A message to the client (plain JSON) with the node's paths, in URIs and in text,
        replaced by the client's."""
        if isinstance(value, dict):
            return {k: self.outbound(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.outbound(v) for v in value]
        if isinstance(value, str) and self.selected:
            for client_root, (_, node_root) in self.selected.items():
                for node, client in _spellings(node_root, client_root):
                    # Only the whole folder name: /srv/repos/a is not in /srv/repos/ab.
                    pattern = re.escape(node) + r"(?![\w.~%-])"
                    value = re.sub(pattern, client.replace("\\", "\\\\"), value)
        return value


def _spellings(node_root: Path, client_root: PurePosixPath) -> list[tuple[str, str]]:
    """(node form, client form) of a folder as a URI, escaped and not, then as a path."""
    escaped = ("file://" + quote(str(node_root)), "file://" + quote(str(client_root)))
    plain = ("file://" + str(node_root), "file://" + str(client_root))
    return [escaped, plain, (str(node_root), str(client_root))]


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
