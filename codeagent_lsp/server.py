"""The language server: pygls plumbing, settings and the shared Assistant. Features live in
`features/`, one module each, registered by `build_server`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls import uris
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument
from pygls.workspace.position_codec import ServerTextPosition

from codeagent_lsp import __version__, settings
from codeagent_lsp.assistant import Assistant, ModelUnavailable
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.builder import ContextBuilder
from codeagent_lsp.engine.pool import BackendPool
from codeagent_lsp.features import FEATURE_OF, guarded
from codeagent_lsp.security import audit, guard
from codeagent_lsp.security.audit import AuditLog
from codeagent_lsp.security.identity import Identity, os_identity
from codeagent_lsp.security.policy import policy_in_force
from codeagent_lsp.security.roots import Root

if TYPE_CHECKING:
    from codeagent_lsp.features.indexing import IndexingFeature

log = logging.getLogger(__name__)

RESTART_KEYS = ("model", "modelsDir", "engine", "remote")
"""Settings whose change needs the model to be loaded again."""


class CodeagentServer(LanguageServer):
    def __init__(self, log_level: str | None = None, backends: BackendPool | None = None) -> None:
        # The stdio reader holds one worker of the pool for good: at least two are needed.
        super().__init__("codeagent-lsp", __version__, max_workers=4)
        self.log_level = log_level
        """--log-level from the command line; it wins over codeagent.logging.level."""
        self.settings = settings.Settings()
        self.backends = backends
        """The network node's models, shared by its connections (None on stdio)."""
        self.assistant = Assistant(self.settings, self.tell_status, backends)
        self._told_problem = False
        self._loading_started = False
        self._loading_task: asyncio.Task[None] | None = None
        """Kept so the loop's weak reference is not the only one while the model loads."""
        self.codegraph: WorkspaceIndex | None = None
        """The workspace's CodeGraph once opened (features answer empty until then)."""
        self.indexing: IndexingFeature | None = None
        self.explanations: dict[tuple[str, str], str] = {}
        """Model explanations by (file, hash of the explained code): hover shows one while the
        code it explains is unchanged."""
        self.context_builder: ContextBuilder | None = None
        """Repository context for completion prompts, once the CodeGraph is open."""
        self._told_refused: set[str] = set()
        """Documents the user was told are not served (outside the workspace, too large)."""
        self.policy = policy_in_force()
        """The administrator's policy, read once at start (never from the client)."""
        self.identity = os_identity()
        """Who the requests are decided for: the OS user on stdio; the transport sets it from
        the bearer token on TCP and WebSocket."""
        self._audit: AuditLog | None = None

    def feature(self, feature_name: str, options: Any | None = None) -> Any:
        """pygls's registration, with every governed feature behind the policy and audit log."""
        register = super().feature(feature_name, options)
        return lambda handler: register(guarded(feature_name, handler))

    @property
    def audit(self) -> AuditLog:
        """The audit log, opened on first use where the policy says."""
        if self._audit is None:
            rules = self.policy.audit
            self._audit = AuditLog(
                rules.db_path(), store_prompts=rules.store_prompts, store_code=rules.store_code
            )
        return self._audit

    def audit_refusal(self, who: Identity, method: str, reason: str) -> None:
        """A request the transport refused before any feature ran (busy, rate limited) is
        audited too, as a denial of its feature."""
        row = audit.new_row(who, FEATURE_OF.get(method, method[:100]), None, None)
        audit.deny(self.audit, row, reason)

    # --- settings -------------------------------------------------------------------------------

    def apply_settings(self, raw: Any) -> None:
        """Overlay client settings; restart the engine when the model or engine changed."""
        merged, errors = settings.merge(self.settings, raw)
        if errors:
            self.window_show_message(
                types.ShowMessageParams(
                    types.MessageType.Warning,
                    "codeagent: some settings were ignored: " + "; ".join(errors),
                )
            )
        restart = any(getattr(merged, k) != getattr(self.settings, k) for k in RESTART_KEYS)
        self.settings = merged
        _set_log_level(self.log_level or merged.logging.level)
        if restart:
            self.assistant.close()
            self.assistant = Assistant(merged, self.tell_status, self.backends)
            self.use_context_builder(self.context_builder)
            self._told_problem = False
            if self._loading_started:
                self.start_loading()
        else:
            self.assistant.settings = merged

    def use_context_builder(self, builder: ContextBuilder | None) -> None:
        self.context_builder = builder
        self.assistant.context = builder.context_files if builder else None

    def start_loading(self) -> None:
        """Load the model in the background; say once what is missing if it cannot be."""
        self._loading_started = True

        async def load() -> None:
            try:
                info = await self.assistant.load()
            except ModelUnavailable as exc:
                self.tell_problem(str(exc))
                return
            log.info("ready: %s on %s", info.name, info.device)

        self._loading_task = asyncio.get_running_loop().create_task(load())

    def tell_problem(self, message: str) -> None:
        if self._told_problem:
            return
        self._told_problem = True
        self.window_show_message(
            types.ShowMessageParams(
                types.MessageType.Error,
                f"codeagent: no completions until a model is available. {message}",
            )
        )

    def tell_status(self, message: str) -> None:
        """A change the user should know of (a remote inference replica failed or is back)."""
        self.window_show_message(
            types.ShowMessageParams(types.MessageType.Warning, f"codeagent: {message}")
        )

    async def pull_configuration(self) -> None:
        """Read the `codeagent` section through workspace/configuration when the client can."""
        caps = self.client_capabilities.workspace
        if not (caps and caps.configuration):
            return
        try:
            result = await self.workspace_configuration_async(
                types.ConfigurationParams([types.ConfigurationItem(section=settings.SECTION)])
            )
        except Exception as exc:  # a client that fails this request keeps the settings it had
            log.warning("workspace/configuration failed: %s", exc)
            return
        if result and result[0] is not None:
            self.apply_settings(result[0])

    # --- documents ------------------------------------------------------------------------------

    def open_document(self, uri: str) -> TextDocument:
        """An open document; never reads from disk (a URI of an unopened file is refused)."""
        if uri not in self.workspace.text_documents:
            raise JsonRpcInvalidParams(f"document is not open: {uri}")
        refusal = self.document_refusal(uri)
        if refusal is not None:
            raise JsonRpcInvalidParams(f"codeagent: {uri} is not served: {refusal}")
        return self.workspace.get_text_document(uri)

    def document_refusal(self, uri: str) -> str | None:
        """Why an open document is not served (outside the workspace, too large), or None."""
        roots = [Root.of(name, path) for name, path in self.workspace_roots()]
        document = self.workspace.text_documents.get(uri)
        return guard.uri_refusal(uri, roots) or (
            guard.size_refusal(document.source, self.settings.documents.maxBytes)
            if document is not None
            else None
        )

    def workspace_roots(self) -> list[tuple[str, Path]]:
        """Workspace folders, then the extra repositories from the settings, by folder name."""
        roots: list[tuple[str, Path]] = []
        for folder in self.workspace.folders.values():
            path = uris.to_fs_path(folder.uri)
            if path:
                roots.append((repo_name(folder), Path(path)))
        if not roots and self.workspace.root_path:
            roots.append((Path(self.workspace.root_path).name, Path(self.workspace.root_path)))
        for extra in self.settings.codegraph.extraRepositories:
            path = Path(extra).expanduser()
            roots.append((path.name, path))
        return roots

    def tell_refusal(self, uri: str) -> None:
        """Say once per document why it is not served (on open and change)."""
        refusal = self.document_refusal(uri)
        if refusal is None or uri in self._told_refused:
            if refusal is None:
                self._told_refused.discard(uri)
            return
        self._told_refused.add(uri)
        self.window_show_message(
            types.ShowMessageParams(
                types.MessageType.Warning,
                f"codeagent: {PurePath(uri).name} is not served: {refusal}",
            )
        )

    def close(self) -> None:
        """Write the queued audit rows, free the model (its backend's close() stops the engine)
        and the CodeGraph: on shutdown, on a stop signal, or when a network client leaves.
        Closing twice is harmless."""
        if self._audit is not None:
            self._audit.flush()
        self.assistant.close()
        if self.codegraph is not None:
            self.codegraph.close()


def prompt_location(server: CodeagentServer, document: TextDocument) -> tuple[str | None, str]:
    """(repository name, path inside it) for the prompt: the workspace folder holding the
    document and the path relative to it. Absolute paths never reach the model: they say
    nothing useful and words in them (a temporary folder called "test_x") sway it."""
    return path_location(server, document.path)


def path_location(server: CodeagentServer, fs_path: str) -> tuple[str | None, str]:
    """(workspace folder's name, posix path inside it) of a file, else (None, its name)."""
    path = PurePath(fs_path)
    for folder in server.workspace.folders.values():
        root = PurePath(uris.to_fs_path(folder.uri) or "")
        if path.is_relative_to(root) and path != root:
            return repo_name(folder), path.relative_to(root).as_posix()
    return None, path.name


def repo_name(folder: types.WorkspaceFolder) -> str:
    """A workspace folder's name as prompts and stats show it. Neovim names folders by their
    absolute path, which must not reach the model: only its last part is kept."""
    fs_path = uris.to_fs_path(folder.uri) or ""
    return PurePath(folder.name).name or PurePath(fs_path).name or "workspace"


def offset_of(document: TextDocument, position: types.Position) -> int:
    """Code-point offset of an LSP position in the negotiated encoding; InvalidParams when the
    position is outside the document (a character past the line end means the line end, as the
    specification says)."""
    lines = document.lines
    if position.line < 0 or position.character < 0 or position.line > len(lines):
        raise JsonRpcInvalidParams(
            f"position {position.line}:{position.character} is outside the document "
            f"({len(lines)} lines)"
        )
    if position.line == len(lines):
        return len(document.source)
    line = lines[position.line]
    content = line.rstrip("\r\n")
    units = document.position_codec.client_num_units(content)
    clamped = types.Position(position.line, min(position.character, units))
    return document.offset_at_position(clamped)


def position_of(document: TextDocument, offset: int) -> types.Position:
    """The LSP position of a code-point offset, in the negotiated encoding. (pygls's own
    conversion puts the end of a last line without a newline on the line after it.)"""
    remaining = offset
    lines = document.lines
    for number, line in enumerate(lines):
        if remaining <= len(line.rstrip("\r\n")):
            return document.position_to_client_units(ServerTextPosition(number, remaining))
        remaining -= len(line)
    return types.Position(len(lines), 0)


def _set_log_level(level: str) -> None:
    logging.getLogger("codeagent_lsp").setLevel(level.upper())


def build_server(
    log_level: str | None = None, backends: BackendPool | None = None
) -> CodeagentServer:
    from codeagent_lsp.features import (
        actions,
        completion,
        hover,
        indexing,
        lifecycle,
        navigation,
        stats,
    )

    server = CodeagentServer(log_level, backends)
    for feature in (lifecycle, completion, stats, indexing, navigation, hover, actions):
        feature.register(server)
    return server
