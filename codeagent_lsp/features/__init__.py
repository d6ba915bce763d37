"""LSP features, one module each, with `register(server)`; each translates LSP to calls on the
Assistant (completion pipeline) and back, and nothing below this package imports pygls.

`guarded` is the one place the policy is enforced: `CodeagentServer.feature` wraps every
handler of a method in FEATURE_OF with it, so each request is decided for the server's
identity, feature and file before the handler runs, answered with a RequestFailed error when
denied, and written to the audit log either way (with its prompt and response hashes, which the
pipeline notes on the request's audit row).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from codeagent_lsp.security import audit, fileuri
from codeagent_lsp.security.policy import Decision

if TYPE_CHECKING:
    from codeagent_lsp.server import CodeagentServer

STATS = "codeagent/stats"
ACTIONS = "actions"
"""The code action list: always answered (editors ask on every cursor move), cut to the actions
the identity may use on that file."""

FEATURE_OF: dict[str, str] = {
    types.TEXT_DOCUMENT_INLINE_COMPLETION: "completion",
    types.TEXT_DOCUMENT_COMPLETION: "completion",
    types.TEXT_DOCUMENT_HOVER: "hover",
    types.TEXT_DOCUMENT_DEFINITION: "navigation",
    types.TEXT_DOCUMENT_REFERENCES: "navigation",
    types.TEXT_DOCUMENT_DOCUMENT_SYMBOL: "navigation",
    types.WORKSPACE_SYMBOL: "navigation",
    types.TEXT_DOCUMENT_CODE_ACTION: ACTIONS,
    types.CODE_ACTION_RESOLVE: ACTIONS,  # the action's own name, from its data
    types.TEXT_DOCUMENT_RENAME: "nextedit",
    types.TEXT_DOCUMENT_PREPARE_RENAME: "nextedit",
    STATS: "stats",
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
    repository, path = file_of(ls, uri)
    row = audit.new_row(ls.identity, feature, repository, path)
    row.model_sha256 = ls.assistant.model_sha256
    refusal = ls.audit.refusal()  # fail closed: nothing is served unaudited
    decision = Decision(False, refusal) if refusal else _decide(ls, feature, repository, path)
    if not decision.allowed:
        audit.deny(ls.audit, row, decision.reason)
        raise PolicyDenied(f"codeagent: denied: {decision.reason}")
    with audit.recording(ls.audit, row):
        yield row


def _decide(ls: CodeagentServer, feature: str, repository: str | None, path: str | None):
    if feature == ACTIONS:  # the list sends nothing to the model; it is cut to what may be used
        return Decision(True)
    return ls.policy.decide(ls.identity, feature, repository, path)


def _feature_and_uri(method: str, params: Any) -> tuple[str, str | None]:
    feature = FEATURE_OF[method]
    if method == types.CODE_ACTION_RESOLVE:
        data = params.data._asdict() if hasattr(params.data, "_asdict") else params.data or {}
        return str(data.get("action", ACTIONS)), data.get("uri")
    document = getattr(params, "text_document", None)
    return feature, getattr(document, "uri", None)


def file_of(ls: CodeagentServer, uri: str | None) -> tuple[str | None, str | None]:
    """(repository, path relative to it) of a document: the workspace folder's name and the
    posix path inside it; (None, file name) outside the folders; (None, None) without a file."""
    from codeagent_lsp.server import path_location  # the server module imports this one

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
    return ls.policy.decide(ls.identity, data.get("action", ACTIONS), repository, path)
