"""The language server: pygls plumbing, settings, the shared Assistant, and the gate. Features
live in `features/`, one module each, registered by `features.build_server`.

The gate (`guarded`) is the one place the policy is enforced on LSP requests:
`CodeagentServer.feature` wraps every handler of a method in FEATURE_OF with it, so each request
is decided for the server's identity, feature and file before the handler runs, answered with a
RequestFailed error when denied, and written to the audit log either way (with its prompt and
response hashes, which the pipeline notes on the request's audit row).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.workspace import TextDocument

from codeagent_lsp import __version__, documents, lines, settings
from codeagent_lsp.assistant import Assistant, ModelUnavailable
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.builder import ContextBuilder
from codeagent_lsp.engine.llama import EngineError
from codeagent_lsp.engine.pool import BackendPool
from codeagent_lsp.security import audit, fileuri, guard
from codeagent_lsp.security.audit import AuditLog
from codeagent_lsp.security.enforce import Refused, enforced, open_audit_log
from codeagent_lsp.security.feature import Feature
from codeagent_lsp.security.identity import Identity, os_identity
from codeagent_lsp.security.nodepaths import FolderMap
from codeagent_lsp.security.policy import MODEL_FEATURES, Decision, policy_in_force
from codeagent_lsp.security.roots import Root, link_names, locate
from codeagent_lsp.transport import HeavyWork

log = logging.getLogger(__name__)

T = TypeVar("T")

RESTART_KEYS = ("model", "modelsDir", "engine", "remote")
"""Settings whose change needs the model to be loaded again."""


@dataclass(frozen=True)
class NodeConfig:
    """What a shared node decides for every client: its settings (model, engine, cache folders,
    logging, inference URLs) and the roots its repositories are found under, by name
    (`nodepaths.find`)."""

    settings: settings.Settings = field(default_factory=settings.Settings)
    repositories: tuple[Path, ...] = ()


class DocumentNotOpen(JsonRpcInvalidParams):
    """A request on a document the client has not opened (or has closed): expected, as a
    client may ask about a document it is closing."""


class CodeagentProtocol(LanguageServerProtocol):
    """pygls's protocol, with error replies that carry no traceback and no install paths.

    pygls answers an exception in a handler with its traceback in the reply's data and logs
    every error, an expected refusal included, at ERROR with a traceback. Here a deliberate
    refusal (a JsonRpcException: the request is wrong or not allowed) is answered as raised and
    logged once at INFO; anything else is answered with its type and a sentence, and logged
    with its traceback at ERROR.
    """

    def handle_message(self, message: Any) -> None:
        """pygls drops a request that comes after `shutdown` without a word, so the client
        waits for ever; the specification says it is answered with InvalidRequest."""
        method = getattr(message, "method", None)
        if self._shutdown and method not in (None, types.EXIT) and hasattr(message, "id"):
            log.info("request %s (%s) after shutdown refused", message.id, method)
            error = types.ResponseError(
                types.ErrorCodes.InvalidRequest, f"{method}: the server is shutting down"
            )
            self._send_response(message.id, error=error)
            return
        super().handle_message(message)

    def _send_data(self, data: Any) -> None:
        folders = getattr(self._server, "folders", None)
        if folders is not None and data is not None:  # a node: its paths become the client's
            data = folders.outbound(json.loads(json.dumps(data, default=self._serialize_message)))
        super()._send_data(data)

    def _send_handler_result(self, future: Any, *, msg_id: Any) -> None:
        error = None if future.cancelled() else future.exception()
        if error is None:
            super()._send_handler_result(future, msg_id=msg_id)
            return
        self._request_futures.pop(msg_id, None)
        self._send_response(msg_id, error=reply_error(error, f"request {msg_id}"))

    def _check_handler_result(self, future: Any) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            reply = reply_error(error, "a notification")
            self._server.window_show_message(
                types.ShowMessageParams(types.MessageType.Error, f"codeagent: {reply.message}")
            )


def reply_error(error: BaseException, what: str) -> types.ResponseError:
    """The error the client is told of, and the log line (with details) the server keeps."""
    if isinstance(error, JsonRpcException):
        log.info("%s refused (%s): %s", what, error.code, error.message)
        return types.ResponseError(error.code, error.message)
    if isinstance(error, EngineError):  # the model failed (its worker died): said in words
        log.warning("%s: the model failed: %s", what, error)
        return types.ResponseError(types.LSPErrorCodes.RequestFailed, f"codeagent: {error}")
    log.error("%s failed", what, exc_info=error)
    name = type(error).__name__
    return types.ResponseError(
        JsonRpcInternalError.CODE,
        f"{name}: the server failed on this request; the details are in its log",
    )


# --- the gate: policy and audit log around every governed feature ----------------------------

STATS = "codeagent/stats"

FEATURE_OF: dict[str, Feature] = {
    types.TEXT_DOCUMENT_INLINE_COMPLETION: Feature.COMPLETION,
    types.TEXT_DOCUMENT_COMPLETION: Feature.COMPLETION,
    types.TEXT_DOCUMENT_HOVER: Feature.HOVER,
    types.TEXT_DOCUMENT_DEFINITION: Feature.NAVIGATION,
    types.TEXT_DOCUMENT_REFERENCES: Feature.NAVIGATION,
    types.TEXT_DOCUMENT_DOCUMENT_SYMBOL: Feature.NAVIGATION,
    types.WORKSPACE_SYMBOL: Feature.NAVIGATION,
    # The code action list is always answered (editors ask on every cursor move), cut to the
    # actions the identity may use on that file.
    types.TEXT_DOCUMENT_CODE_ACTION: Feature.ACTIONS,
    types.CODE_ACTION_RESOLVE: Feature.ACTIONS,  # the action's own name, from its data
    types.TEXT_DOCUMENT_RENAME: Feature.NEXTEDIT,
    types.TEXT_DOCUMENT_PREPARE_RENAME: Feature.NEXTEDIT,
    STATS: Feature.STATS,
}


class PolicyDenied(JsonRpcException):
    """LSP's RequestFailed: the request was understood and the policy refuses it."""

    CODE = -32803


def guarded(method: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler` behind the policy and the audit log when `method` is a governed feature."""
    if method not in FEATURE_OF:
        return handler
    if asyncio.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def run_async(ls: CodeagentServer, params: Any) -> Any:
            with _request(ls, method, params):
                return _cut_to_policy(ls, method, await handler(ls, params))

        return run_async

    @functools.wraps(handler)
    def run(ls: CodeagentServer, params: Any) -> Any:
        with _request(ls, method, params):
            return _cut_to_policy(ls, method, handler(ls, params))

    return run


@contextlib.contextmanager
def _request(ls: CodeagentServer, method: str, params: Any) -> Iterator[audit.Row]:
    feature, uri = _feature_and_uri(method, params)
    file, sha256 = file_of(ls, uri), ls.assistant.model_sha256
    try:
        with enforced(ls.policy, ls.audit, ls.identity, feature, file, sha256) as row:
            yield row
    except Refused as refused:
        raise PolicyDenied(f"codeagent: denied: {refused}") from None


def _feature_and_uri(method: str, params: Any) -> tuple[str, str | None]:
    feature = FEATURE_OF[method]
    if method == types.CODE_ACTION_RESOLVE:
        data = params.data._asdict() if hasattr(params.data, "_asdict") else params.data or {}
        return str(data.get("action", Feature.ACTIONS)), data.get("uri")
    document = getattr(params, "text_document", None)
    return feature, getattr(document, "uri", None)


def file_of(ls: CodeagentServer, uri: str | None) -> tuple[str | None, str | None]:
    """(repository, path relative to it) of a document: the workspace folder's name and the
    posix path inside it; (None, file name) outside the folders; (None, None) without a file."""
    path = fileuri.path_of(uri) if isinstance(uri, str) else None
    return path_location(ls, str(path)) if path else (None, None)


def _cut_to_policy(ls: CodeagentServer, method: str, result: Any) -> Any:
    """Code actions the identity may not use on that file are left out of the list."""
    if method != types.TEXT_DOCUMENT_CODE_ACTION or not result:
        return result
    return [a for a in result if _may_use(ls, a).allowed]


def _may_use(ls: CodeagentServer, action: types.CodeAction) -> Decision:
    data = action.data or {}
    repository, path = file_of(ls, data.get("uri"))
    return ls.policy.decide(ls.identity, data.get("action", Feature.ACTIONS), repository, path)


class CodeagentServer(LanguageServer):
    def __init__(
        self,
        log_level: str | None = None,
        backends: BackendPool | None = None,
        node: NodeConfig | None = None,
    ) -> None:
        # The stdio reader holds one worker of the pool for good: at least two are needed.
        super().__init__(
            "codeagent-lsp", __version__, protocol_cls=CodeagentProtocol, max_workers=4
        )
        self.log_level = log_level
        """--log-level from the command line; it wins over codeagent.logging.level."""
        self.node = node
        """A shared node's own configuration; None on stdio."""
        self.settings = node.settings if node else settings.Settings()
        self.backends = backends
        """The network node's models, shared by its connections (None on stdio)."""
        self.assistant = Assistant(self.settings, self.tell_status, backends)
        self._told_problem = False
        self._loading_started = False
        self._loading_task: asyncio.Task[None] | None = None
        self.warming: asyncio.Task[None] | None = None
        """The background warm-up or prefetch, if one runs (features/completion)."""
        """Kept so the loop's weak reference is not the only one while the model loads."""
        self.codegraph: WorkspaceIndex | None = None
        """The workspace's CodeGraph once opened (features answer empty until then)."""
        self._parts: dict[type, object] = {}
        """Feature objects other features call (the indexer, next edits), by class: `part`."""
        self.explanations: dict[tuple[str, str], str] = {}
        """Model explanations by (file, hash of the explained code): hover shows one while the
        code it explains is unchanged."""
        self.context_builder: ContextBuilder | None = None
        """Repository context for completion prompts, once the CodeGraph is open."""
        self._told_refused: set[str] = set()
        """Documents (by normal form) the user was told are not served."""
        self.policy = policy_in_force()
        """The administrator's policy, read once at start (never from the client)."""
        self.identity = os_identity()
        """Who the requests are decided for: the OS user on stdio; the transport sets it from
        the bearer token on TCP and WebSocket."""
        self._audit: AuditLog | None = None
        self.folders = (
            FolderMap(node.repositories, self._repository_refusal, self._tell_warning)
            if node is not None
            else None
        )
        """On a node: which of its repositories the client's workspace folders select."""

    def _repository_refusal(self, name: str) -> str | None:
        decision = self.policy.repository_open(self.identity, name)
        return None if decision.allowed else decision.reason

    def _tell_warning(self, message: str) -> None:
        self.window_show_message(
            types.ShowMessageParams(types.MessageType.Warning, f"codeagent: {message}")
        )

    def may_use_model(self) -> bool:
        """Does the identity's role allow any feature that runs the model? A role without one
        loads no engine."""
        return any(self.policy.decide(self.identity, f).allowed for f in MODEL_FEATURES)

    def attach(self, part: object) -> None:
        """Keep a feature's object for the other features (one per class)."""
        self._parts[type(part)] = part

    def part(self, kind: type[T]) -> T | None:
        """The attached object of class `kind`; None when that feature is not registered."""
        found = self._parts.get(kind)
        return found if isinstance(found, kind) else None

    def feature(self, feature_name: str, options: Any | None = None) -> Any:
        """pygls's registration, with every governed feature behind the policy and audit log."""
        register = super().feature(feature_name, options)
        return lambda handler: register(guarded(feature_name, handler))

    @property
    def audit(self) -> AuditLog:
        """The audit log, opened on first use where the policy says."""
        if self._audit is None:
            self._audit = open_audit_log(self.policy)
        return self._audit

    def audit_refusal(self, who: Identity, method: str, reason: str) -> None:
        """A request the transport refused before any feature ran (busy, rate limited) is
        audited too, as a denial of its feature."""
        row = audit.new_row(who, FEATURE_OF.get(method, method[:100]), None, None)
        audit.deny(self.audit, row, reason)

    # --- settings -------------------------------------------------------------------------------

    def apply_settings(self, raw: Any) -> None:
        """Overlay client settings; restart the engine when the model or engine changed. On a
        node the keys it decides (model, engine, cache folders, logging, inference) are left
        out, with a message."""
        owned: list[str] = []
        if self.node is not None:
            raw, owned = settings.node_owned(raw)
        merged, errors = settings.merge(self.settings, raw)
        if self.node is not None:
            merged = settings.capped_by(merged, self.node.settings)
        errors = owned + errors
        if errors:
            self.window_show_message(
                types.ShowMessageParams(
                    types.MessageType.Warning,
                    "codeagent: some settings were ignored: " + "; ".join(errors),
                )
            )
        restart = any(getattr(merged, k) != getattr(self.settings, k) for k in RESTART_KEYS)
        self.settings = merged
        if self.node is None:  # a node's log level is its own
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
        if not self.may_use_model():
            log.info("no model loaded: the role of %s uses none", self.identity.user)
            return
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

    async def off_loop(self, function: Callable[..., T], *args: Any, heavy: bool = False) -> T:
        """`function(*args)` on this client's own worker threads, the context copied as
        asyncio.to_thread does: light lookups (hover, definition) on `thread_pool`, work that
        grows with a document or the index (`heavy`) on `heavy_lane`. See `heavy_lane`."""
        pool = self.heavy_lane if heavy else self.thread_pool
        call = functools.partial(contextvars.copy_context().run, function, *args)
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    @functools.cached_property
    def heavy_lane(self) -> concurrent.futures.ThreadPoolExecutor:
        """One thread for this client's heavy work, which queues there in order of arrival.
        Such work is pure Python (tree-sitter reads through a Python callback) and holds the
        GIL: one client with four heavy threads won four of every five GIL turns, and another
        client's hover, a few hops through the GIL, waited for all of that client's work. With
        one lane a client's heavy work takes one turn, its own light requests do not queue
        behind it, and in the node's default executor nothing of it queues ahead of others."""
        return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="codeagent-heavy")

    def heavy_work(self) -> HeavyWork:
        """For the transport: edits of large documents are applied on this client's heavy
        lane, in order of arrival."""
        return HeavyWork(
            lambda message: documents.heavy_edit(self.document, message),
            lambda message: documents.squash_edits(self.document, message),
            self.heavy_lane,
        )

    def document(self, uri: str) -> TextDocument | None:
        """The open document `uri` names, in any spelling of it (percent-escapes, `localhost`),
        or None (also before `initialize`). Never reads from disk."""
        if self.protocol._workspace is None:  # pygls's `workspace` raises until then
            return None
        return self.workspace.text_documents.get(fileuri.document_key(uri))

    def open_document(self, uri: str) -> TextDocument:
        """An open document; never reads from disk (a URI of an unopened file is refused)."""
        document = self.document(uri)
        if document is None:
            raise DocumentNotOpen(f"document is not open: {uri}")
        refusal = self.document_refusal(uri)
        if refusal is not None:
            raise JsonRpcInvalidParams(f"codeagent: {uri} is not served: {refusal}")
        return document

    def uri_for(self, path: PurePath | str) -> str:
        """How a reply names a file: as the client spelled it when it is open there."""
        document = self.document(fileuri.uri_of(path))
        return document.uri if document is not None else fileuri.uri_of(path)

    def open_text(self, path: PurePath | str) -> str | None:
        """The editor's text of a file when it is open there, else None."""
        document = self.document(fileuri.uri_of(path))
        return None if document is None else document.source

    def document_refusal(self, uri: str) -> str | None:
        """Why an open document is not served (outside the workspace, too large), or None."""
        document = self.document(uri)
        return guard.uri_refusal(uri, self.roots()) or (
            guard.size_refusal(document.source, self.settings.documents.maxBytes)
            if document is not None
            else None
        )

    def roots(self) -> list[Root]:
        """`workspace_roots` as the URI guard and `path_location` check paths against them."""
        return [Root.of(name, path) for name, path in self.workspace_roots()]

    def workspace_roots(self) -> list[tuple[str, Path]]:
        """Workspace folders, then the extra repositories from the settings, by folder name.
        A folder whose URI names no local folder (a Windows drive) is left out."""
        roots: list[tuple[str, Path]] = []
        for folder in self.workspace.folders.values():
            path = fileuri.path_of(folder.uri)
            if path is not None:
                roots.append((repo_name(folder), Path(path)))
        if not roots and self.workspace.root_uri:
            root_path = fileuri.path_of(self.workspace.root_uri)
            if root_path is not None:
                roots.append((root_path.name, Path(root_path)))
        for extra in self.settings.codegraph.extraRepositories:
            repository = Path(extra).expanduser()
            roots.append((repository.name, repository))
        return roots

    def tell_refusal(self, uri: str) -> None:
        """Say once per document why it is not served (on open and change)."""
        refusal = self.document_refusal(uri)
        key = fileuri.document_key(uri)
        if refusal is None or key in self._told_refused:
            if refusal is None:
                self._told_refused.discard(key)
            return
        self._told_refused.add(key)
        self.window_show_message(
            types.ShowMessageParams(
                types.MessageType.Warning,
                f"codeagent: {PurePath(key).name} is not served: {refusal}",
            )
        )

    def stop_warming(self) -> None:
        """Any keystroke (but an accept), and any other warm-up or prefetch, stops the running
        one."""
        if self.warming is not None:
            self.warming.cancel()
            self.warming = None

    def close(self) -> None:
        """Write the queued audit rows, free the model (its backend's close() stops the engine)
        and the CodeGraph: on shutdown, on a stop signal, or when a network client leaves.
        Closing twice is harmless."""
        self.stop_warming()
        if self._audit is not None:
            self._audit.flush()
        self.assistant.close()
        if self.codegraph is not None:
            self.codegraph.close()


def prompt_location(server: CodeagentServer, document: TextDocument) -> tuple[str | None, str]:
    """(repository name, path inside it) for the prompt: the workspace folder holding the
    document and the path relative to it. Absolute paths never reach the model: they say
    nothing useful and words in them (a temporary folder called "test_x") sway it."""
    return path_location(server, str(document_path(document)))


def document_path(document: TextDocument) -> Path:
    """The file an open document is (served documents are local files: `open_document`)."""
    return Path(fileuri.path_of(document.uri) or document.path)


def path_location(server: CodeagentServer, fs_path: str) -> tuple[str | None, str]:
    """(repository, posix path inside it) of a file, else (None, its name): the deepest root
    holding it, found as the URI guard finds it (`roots.locate`), so a file named through a
    symlinked workspace folder or by its real path is the same file of the same repository
    for the policy, the prompt and the audit. A symlink to another file of the folder is that
    file: the policy's rules and the audit see the file whose text it shows."""
    found = locate(server.roots(), fs_path)
    if found is None:
        return None, PurePath(fs_path).name
    root, relative = found
    return root.repo, link_names(root.path, relative)[-1]


def repo_name(folder: types.WorkspaceFolder) -> str:
    """A workspace folder's name as prompts and stats show it. Neovim names folders by their
    absolute path, which must not reach the model: only its last part is kept."""
    path = fileuri.path_of(folder.uri)
    return PurePath(folder.name).name or (path.name if path else "") or "workspace"


def offset_of(document: TextDocument, position: types.Position) -> int:
    """Code-point offset of an LSP position in the negotiated encoding, on LSP's line model;
    InvalidParams when the position is outside the document (a character past the line end
    means the line end, as the specification says)."""
    count = lines.line_count(document.source)
    if position.line < 0 or position.character < 0 or position.line > count:
        raise JsonRpcInvalidParams(
            f"position {position.line}:{position.character} is outside the document ({count} lines)"
        )
    units = document.position_codec.client_num_units
    return lines.to_offset(document.source, position.line, position.character, units)


def position_of(document: TextDocument, offset: int) -> types.Position:
    """The LSP position of a code-point offset, in the negotiated encoding."""
    units = document.position_codec.client_num_units
    return types.Position(*lines.to_position(document.source, offset, units))


def _set_log_level(level: str) -> None:
    logging.getLogger("codeagent_lsp").setLevel(level.upper())
