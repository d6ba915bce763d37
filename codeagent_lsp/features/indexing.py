"""Keeps the CodeGraph current: the whole workspace in the background on start (with
`$/progress`, cancellable), open documents as they change (debounced), files through
`workspace/didChangeWatchedFiles`."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from lsprotocol import types

from codeagent_lsp.codegraph.store import OpenStatus
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.context.assets import AssetIndex
from codeagent_lsp.context.builder import ContextBuilder
from codeagent_lsp.features.next_edits import NextEdits
from codeagent_lsp.security import audit, fileuri
from codeagent_lsp.security.feature import Feature
from codeagent_lsp.server import CodeagentServer

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.3
"""Quiet time after a keystroke before an open document is indexed again."""
PROGRESS_EVERY_S = 0.5


class IndexingFeature:
    def __init__(self, server: CodeagentServer) -> None:
        self.server = server
        self.cancel_event = threading.Event()
        self.ready = asyncio.Event()
        self._progress_token: str | None = None
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.assets: AssetIndex | None = None
        """API schemas, configuration and docs of the workspace, for prompts."""
        self._roots_lock = asyncio.Lock()
        """Held while the index is built or its roots change."""
        self._changes_waiting = 0
        """Folder changes waiting for the lock: the index is not ready until they are done."""

    def background(self, work) -> None:
        """Run a coroutine without awaiting it, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- start ----------------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._roots_lock:
            ls = self.server
            if not ls.settings.codegraph.enabled or not self._may_index():
                return
            roots = self._roots()
            # Secrets and the policy's [index] rules apply apart from the client's excludes,
            # which add to them and re-admit nothing.
            denied = ls.policy.index.path_policy()
            index = await ls.off_loop(WorkspaceIndex, roots, ls.settings.codegraph, denied)
            ls.codegraph = index
            self._use_assets(index, roots)
            status = index.store.status
            if status.state in ("rebuilt", "memory"):  # say why the index starts from scratch
                log.warning("codegraph store %s: %s", status.state, status.reason)
                ls.tell_status(_store_notice(status))
            await self._watch_files()
            await self._index_all(index)

    def folders_changed(self) -> None:
        """Workspace folders added or removed at run time: the index follows in the
        background, with progress and the policy's repository rules, as at start. Called on
        the event loop as the notification arrives, so stats say "not ready" before any
        request the client sends after it is answered."""
        if self.server.codegraph is None and not self._roots_lock.locked():
            return  # not indexing (disabled, or refused by the policy)
        self._changes_waiting += 1
        self.ready.clear()
        self.background(self._follow_folders())

    async def _follow_folders(self) -> None:
        async with self._roots_lock:  # after the first index, one change at a time
            self._changes_waiting -= 1
            index = self.server.codegraph
            if index is None:  # the start found indexing disabled or refused
                return
            roots = self._roots()
            await self.server.off_loop(index.set_roots, roots)
            self._use_assets(index, roots)
            await self._index_all(index)

    def _roots(self) -> list[tuple[str, Path]]:
        """The workspace roots the policy lets this server index and its identity's roles use:
        a repository the role may not use is not indexed, so no result or prompt can hold it."""
        ls = self.server
        return [
            (n, p)
            for n, p in ls.workspace_roots()
            if ls.policy.index.repository_allowed(n)
            and ls.policy.repository_open(ls.identity, n).allowed
        ]

    def _use_assets(self, index: WorkspaceIndex, roots: list[tuple[str, Path]]) -> None:
        ls = self.server
        policy = ls.policy.index.path_policy(extra_deny=ls.settings.codegraph.exclude)
        self.assets = AssetIndex(roots, policy)
        ls.use_context_builder(ContextBuilder(index, self.assets))

    def _may_index(self) -> bool:
        """The identity's role must allow indexing; a refusal is audited and logged."""
        ls = self.server
        decision = ls.policy.decide(ls.identity, Feature.INDEX)
        if not decision.allowed:
            audit.deny(
                ls.audit, audit.new_row(ls.identity, Feature.INDEX, None, None), decision.reason
            )
            log.warning("not indexing: %s", decision.reason)
        return decision.allowed

    async def _index_all(self, index: WorkspaceIndex) -> None:
        loop = asyncio.get_running_loop()
        self.cancel_event.clear()  # a cancelled pass does not cancel the next one
        token = await self._begin_progress()
        last = [0.0]

        def progress(done: int, total: int, path: str) -> None:
            now = time.monotonic()
            if token and (now - last[0] > PROGRESS_EVERY_S or done == total):
                last[0] = now
                pct = int(done * 100 / total) if total else 100
                loop.call_soon_threadsafe(self._report, token, f"{done}/{total} files", pct)

        row = audit.new_row(self.server.identity, Feature.INDEX, None, None)
        started = time.perf_counter()
        try:
            summary = await self.server.off_loop(
                index.index_all, progress, self.cancel_event.is_set
            )
            if self.assets is not None:
                await self.server.off_loop(self.assets.refresh)
        finally:
            if not self._changes_waiting:
                self.ready.set()
            row.latency_ms = (time.perf_counter() - started) * 1000
            self.server.audit.record(row)
        message = (
            f"{summary.files} files, {summary.symbols} symbols, {summary.references} references "
            f"in {summary.seconds:.1f} s" + (" (cancelled)" if summary.cancelled else "")
        )
        log.info("index: %s", message)
        if token:
            self.server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    async def _begin_progress(self) -> str | None:
        window = self.server.client_capabilities.window
        if not (window and window.work_done_progress):
            return None
        token = f"codeagent-index-{uuid.uuid4().hex[:8]}"
        try:
            await self.server.work_done_progress.create_async(token)
        except Exception as exc:  # a client refusing progress still gets an index
            log.info("no progress reports: %s", exc)
            return None
        self._progress_token = token
        self.server.work_done_progress.begin(
            token,
            types.WorkDoneProgressBegin(
                title="codeagent: indexing", cancellable=True, percentage=0
            ),
        )
        return token

    def _report(self, token: str, message: str, percentage: int) -> None:
        self.server.work_done_progress.report(
            token, types.WorkDoneProgressReport(message=message, percentage=percentage)
        )

    async def _watch_files(self) -> None:
        caps = self.server.client_capabilities.workspace
        watched = caps and caps.did_change_watched_files
        if not (watched and watched.dynamic_registration):
            return
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern="**/*")]
        )
        registration = types.Registration(
            id="codeagent-watch",
            method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=options,
        )
        try:
            await self.server.client_register_capability_async(
                types.RegistrationParams([registration])
            )
        except Exception as exc:
            log.info("file watching not registered: %s", exc)

    # --- updates --------------------------------------------------------------------------------

    def document_changed(self, uri: str) -> None:
        """Index an open document's text once the user pauses."""
        if self.server.codegraph is None:
            return
        if handle := self._pending.pop(uri, None):
            handle.cancel()
        loop = asyncio.get_running_loop()
        self._pending[uri] = loop.call_later(DEBOUNCE_S, self._index_document, uri)

    def _index_document(self, uri: str) -> None:
        self._pending.pop(uri, None)
        index = self.server.codegraph
        path = fileuri.path_of(uri)
        document = self.server.document(uri)
        if index is None or path is None or document is None:
            return
        self.background(self._update_open(index, uri, Path(path), document.source))

    async def _update_open(self, index: WorkspaceIndex, uri: str, path: Path, text: str) -> None:
        await self._update(index.document_changed, path, text)
        edits = self.server.part(NextEdits)
        if edits is not None:  # the text's changes to definitions, if any
            await edits.document_indexed(uri, text)

    async def _update(self, update, *args) -> None:
        """Apply one change off the event loop; index everything again when the database had
        to be rebuilt under the running server."""
        index = self.server.codegraph
        await self.server.off_loop(update, *args, heavy=True)  # parses a whole document
        if index is not None and index.lost_its_data() and self.ready.is_set():
            log.warning("the index database was rebuilt: indexing the workspace again")
            self.ready.clear()
            await self._index_all(index)

    def document_closed(self, uri: str) -> None:
        if handle := self._pending.pop(uri, None):
            handle.cancel()
        index, path = self.server.codegraph, fileuri.path_of(uri)
        if index is not None and path is not None:
            self.background(self._update(index.document_closed, Path(path)))

    async def files_changed(self, changes: Sequence[types.FileEvent]) -> None:
        index = self.server.codegraph
        if index is None:
            return
        for change in changes:
            path = fileuri.path_of(change.uri)
            if path is None:
                continue
            deleted = change.type == types.FileChangeType.Deleted
            await self._update(index.file_deleted if deleted else index.file_changed, Path(path))
            if self.assets is not None:
                assets = self.assets
                update = assets.remove_path if deleted else assets.refresh_path
                await self.server.off_loop(update, Path(path), heavy=True)


def register(server: CodeagentServer) -> None:
    feature = IndexingFeature(server)
    server.attach(feature)

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def cancel_progress(_ls: CodeagentServer, params: types.WorkDoneProgressCancelParams) -> None:
        if params.token == feature._progress_token:
            feature.cancel_event.set()

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def folders(_ls: CodeagentServer, _params: types.DidChangeWorkspaceFoldersParams) -> None:
        # pygls has already added and removed the folders of its workspace. Not a coroutine:
        # pygls would start it as a task after the messages already read were handled.
        feature.folders_changed()

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def watched(_ls: CodeagentServer, params: types.DidChangeWatchedFilesParams) -> None:
        await feature.files_changed(params.changes)


def _store_notice(status: OpenStatus) -> str:
    """What the user is told when the CodeGraph's database could not be used as it was."""
    if status.state == "rebuilt":
        return f"the CodeGraph's database was rebuilt ({status.reason})."
    return (
        f"the CodeGraph is kept in memory only ({status.reason}), so it is rebuilt at every "
        "start; set codeagent.codegraph.cacheDir to a writable folder."
    )
