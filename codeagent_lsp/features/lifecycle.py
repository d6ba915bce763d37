"""Lifecycle, settings and document sync beyond what pygls keeps in its workspace."""

from __future__ import annotations

from lsprotocol import types

from codeagent_lsp.server import CodeagentServer


def register(server: CodeagentServer) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls: CodeagentServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: CodeagentServer, _params: types.InitializedParams) -> None:
        await ls.pull_configuration()
        ls.start_loading()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(
        ls: CodeagentServer, params: types.DidChangeConfigurationParams
    ) -> None:
        pushed = params.settings
        if isinstance(pushed, dict) and isinstance(pushed.get("codeagent"), dict):
            ls.apply_settings(pushed["codeagent"])
        else:  # clients that only say "something changed" expect a pull
            await ls.pull_configuration()

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CodeagentServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.assistant.forget(params.text_document.uri)

    # pygls applies didOpen/didChange to its workspace itself; registering them advertises
    # incremental sync with open/close and save notifications.
    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(_ls: CodeagentServer, _params: types.DidOpenTextDocumentParams) -> None:
        return None

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(_ls: CodeagentServer, _params: types.DidChangeTextDocumentParams) -> None:
        return None

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(_ls: CodeagentServer, _params: types.DidSaveTextDocumentParams) -> None:
        return None
