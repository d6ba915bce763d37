"""Lifecycle, settings and document sync beyond what pygls keeps in its workspace."""

from __future__ import annotations

from lsprotocol import types

from codeagent_lsp.documents import use_lsp_workspace
from codeagent_lsp.features import completion
from codeagent_lsp.features.indexing import IndexingFeature
from codeagent_lsp.features.next_edits import NextEdits
from codeagent_lsp.security import fileuri
from codeagent_lsp.server import CodeagentServer

DID_OPEN = types.TEXT_DOCUMENT_DID_OPEN
DID_CHANGE = types.TEXT_DOCUMENT_DID_CHANGE
DID_SAVE = types.TEXT_DOCUMENT_DID_SAVE


def register(server: CodeagentServer) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls: CodeagentServer, params: types.InitializeParams) -> None:
        use_lsp_workspace(ls.workspace)
        ls.apply_settings(params.initialization_options)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: CodeagentServer, _params: types.InitializedParams) -> None:
        if ls.policy.locked:  # say why every request will be refused
            ls.window_show_message(
                types.ShowMessageParams(types.MessageType.Error, f"codeagent: {ls.policy.locked}")
            )
        await ls.pull_configuration()
        ls.start_loading()
        if (indexing := ls.part(IndexingFeature)) is not None:
            indexing.background(indexing.start())

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(
        ls: CodeagentServer, params: types.DidChangeConfigurationParams
    ) -> None:
        pushed = params.settings
        if isinstance(pushed, dict) and isinstance(pushed.get("codeagent"), dict):
            ls.apply_settings(pushed["codeagent"])
        else:  # clients that only say "something changed" expect a pull
            await ls.pull_configuration()

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: CodeagentServer, _params: None) -> None:
        ls.close()

    # pygls applies the changes to its workspace itself; these keep the CodeGraph and the
    # KV-cache slots in step with the open documents.
    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CodeagentServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        key = fileuri.document_key(uri)
        ls.assistant.forget(key)
        if ls.context_builder is not None:
            ls.context_builder.forget(key)
        if (indexing := ls.part(IndexingFeature)) is not None:
            indexing.document_closed(uri)
            if (edits := ls.part(NextEdits)) is not None:  # its changes' flags go with it
                indexing.background(edits.document_closed(uri))

    def text_changed(
        ls: CodeagentServer,
        params: types.DidOpenTextDocumentParams
        | types.DidChangeTextDocumentParams
        | types.DidSaveTextDocumentParams,
    ) -> None:
        ls.tell_refusal(params.text_document.uri)
        if (indexing := ls.part(IndexingFeature)) is not None:
            indexing.document_changed(params.text_document.uri)

    @server.feature(DID_OPEN)
    def did_open(ls: CodeagentServer, params: types.DidOpenTextDocumentParams) -> None:
        edits, indexing = ls.part(NextEdits), ls.part(IndexingFeature)
        if edits is not None and indexing is not None:  # in the background: it parses it all
            document = params.text_document
            indexing.background(edits.document_opened(document.uri, document.text))
        text_changed(ls, params)
        completion.warm(ls, params.text_document.uri)

    @server.feature(DID_CHANGE)
    def did_change(ls: CodeagentServer, params: types.DidChangeTextDocumentParams) -> None:
        text_changed(ls, params)
        completion.text_changed(ls, params.text_document.uri)

    server.feature(DID_SAVE)(text_changed)
