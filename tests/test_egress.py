"""No egress: the guard refuses and audits every connection that is not to this machine or to an
allowed inference service, and every feature works in a network namespace with no network."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from codeagent_lsp.security.egress import EgressGuard
from tests.conftest import EDITORS, PROJECTS, accept_registrations
from tests.test_actions import actions_params
from tests.test_codegraph_lsp import cursor_on, open_file
from tests.test_server import inline, open_doc, stats

ALLOWED = "https://llm.corp.example:8443"


def test_guard_lets_local_and_allowed_endpoints_through_and_refuses_the_rest():
    refused: list[str] = []
    guard = EgressGuard([ALLOWED], refused.append)
    for local in [("127.0.0.1", 5), ("::1", 5, 0, 0), ("localhost", 80), ("0.0.0.0", 9)]:
        guard.check_connect(local)
    guard.check_connect("/run/some.sock")  # a Unix socket
    guard.check_connect(("llm.corp.example", 8443))
    guard.check_lookup("llm.corp.example")
    guard.check_lookup(None)
    assert refused == []

    with pytest.raises(PermissionError, match=r"192\.0\.2\.7:443 refused"):
        guard.check_connect(("192.0.2.7", 443))
    with pytest.raises(PermissionError):
        guard.check_connect(("llm.corp.example", 80))  # the allowed host, another port
    with pytest.raises(PermissionError, match=r"name lookup of example\.com"):
        guard.check_lookup(b"example.com")
    assert refused == [
        "connection to 192.0.2.7:443",
        "connection to llm.corp.example:80",
        "name lookup of example.com",
    ]


GUARDED_PROCESS = """
import json, socket, sys, urllib.request
from pathlib import Path
from codeagent_lsp.security.egress import guard_process
from codeagent_lsp.security.identity import os_identity
from codeagent_lsp.security.enforce import open_audit_log
from codeagent_lsp.security.policy import AuditRules, Policy

guard_process((), os_identity(), lambda: open_audit_log(Policy(audit=AuditRules(db=sys.argv[1]))))
outcomes = {}
listener = socket.create_server(("127.0.0.1", 0))
with socket.create_connection(listener.getsockname(), timeout=5):
    outcomes["loopback"] = "connected"
for name, attempt in [
    ("address", lambda: socket.create_connection(("192.0.2.1", 9), timeout=5)),
    ("url", lambda: urllib.request.urlopen("http://example.com/", timeout=5)),
]:
    try:
        attempt()
        outcomes[name] = "connected"
    except OSError as exc:
        outcomes[name] = str(getattr(exc, "reason", exc))
print(json.dumps(outcomes))
"""


def test_a_guarded_process_reaches_only_this_machine_and_audits_the_rest(tmp_path: Path):
    db = tmp_path / "audit.sqlite3"
    run = subprocess.run(
        [sys.executable, "-c", GUARDED_PROCESS, str(db)], capture_output=True, text=True, check=True
    )
    outcomes = json.loads(run.stdout)
    assert outcomes["loopback"] == "connected"
    assert "192.0.2.1:9 refused" in outcomes["address"]
    assert "name lookup of example.com refused" in outcomes["url"]

    verify = subprocess.run(
        [sys.executable, "-m", "codeagent_lsp", "audit", "verify", "--db", str(db)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    rows = [r for r in _rows(db) if r["feature"] == "network"]
    assert [(r["decision"], r["reason"]) for r in rows] == [
        ("deny", "connection to 192.0.2.1:9"),
        ("deny", "name lookup of example.com"),
    ]


def _rows(db: Path) -> list[dict]:
    if not db.is_file():
        return []
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cursor = connection.execute("SELECT * FROM audit ORDER BY id")
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]
    finally:
        connection.close()


@pytest.mark.settings(
    {"engine": {"backend": "remote"}, "remote": {"urls": ["http://192.0.2.1:8080"]}}
)
async def test_an_inference_service_the_policy_does_not_list_is_refused_and_audited(
    client: LanguageClient, workspace: Path
):
    uri = open_doc(client, workspace, "a.py", "x = 1\n")
    result = await inline(client, uri, types.Position(0, 5))
    assert not result.items  # no suggestion; the message says why
    assert any("192.0.2.1:8080 refused" in m.message for m in client.messages)
    db = Path(os.environ["XDG_STATE_HOME"]) / "codeagent-lsp" / "audit.sqlite3"
    for _ in range(100):
        if any(r["reason"] == "inference service 192.0.2.1:8080" for r in _rows(db)):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the refused inference service is not in the audit log")


def _network_namespaces_work() -> bool:
    return (
        shutil.which("unshare") is not None
        and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    )


needs_netns = pytest.mark.skipif(
    not _network_namespaces_work(), reason="this machine allows no user network namespaces"
)


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=["unshare", "-rn", sys.executable, "-m", "codeagent_lsp"]
    ),
    params=EDITORS,
)
async def offline_client(
    lsp_client: LanguageClient, request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path
):
    """The server in a network namespace of its own, with no network at all."""
    root = tmp_path / "workspace"
    shutil.copytree(PROJECTS / "python", root / "python")
    params = types.InitializeParams(
        capabilities=client_capabilities(request.param),
        initialization_options={
            "model": str(tiny_model),
            "engine": {"threads": 1},
            "codegraph": {"cacheDir": str(tmp_path / "cache")},
        },
        workspace_folders=[types.WorkspaceFolder(root.as_uri(), "workspace")],
    )
    accept_registrations(lsp_client)
    await lsp_client.initialize_session(params)
    lsp_client.root = root  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


@needs_netns
def test_the_namespace_has_no_network():
    probe = "import socket; socket.create_connection(('1.1.1.1', 53), timeout=5)"
    run = subprocess.run(
        ["unshare", "-rn", sys.executable, "-c", probe], capture_output=True, text=True
    )
    assert run.returncode != 0 and "unreachable" in run.stderr


@needs_netns
async def test_every_feature_works_without_a_network(offline_client: LanguageClient):
    deadline = time.monotonic() + 30
    while not ((await stats(offline_client)).get("codegraph") or {}).get("ready"):
        assert time.monotonic() < deadline, "indexing did not finish"
        await asyncio.sleep(0.1)

    uri, text = open_file(offline_client, "python/app.py")
    position = cursor_on(text, "describe(", "Circle")
    definition = await offline_client.text_document_definition_async(
        types.DefinitionParams(types.TextDocumentIdentifier(uri), position)
    )
    assert any(loc.uri.endswith("geometry.py") for loc in definition)
    hover = await offline_client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(uri), position)
    )
    assert "class Circle" in hover.contents.value
    references = await offline_client.text_document_references_async(
        types.ReferenceParams(
            context=types.ReferenceContext(include_declaration=True),
            text_document=types.TextDocumentIdentifier(uri),
            position=position,
        )
    )
    assert len(references) >= 2
    symbols = await offline_client.text_document_document_symbol_async(
        types.DocumentSymbolParams(types.TextDocumentIdentifier(uri))
    )
    assert {"describe", "main"} <= {s.name for s in symbols}
    found = await offline_client.workspace_symbol_async(types.WorkspaceSymbolParams("Circ"))
    assert any(s.name == "Circle" for s in found)

    end = types.Position(len(text.splitlines()) - 1, 0)
    await inline(offline_client, uri, end)
    await offline_client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(uri), end)
    )
    inside_describe = text[: text.index("# Name and area")].count("\n")
    actions = await offline_client.text_document_code_action_async(
        actions_params(uri, inside_describe)
    )
    assert len(actions) == 3  # explain, docstring, tests
    for action in actions:
        await offline_client.code_action_resolve_async(action)
    outcomes = [r["outcome"] for r in (await stats(offline_client))["records"]]
    # "preempted": the warm-up of didOpen gave way to the first real request
    assert len(outcomes) >= 5 and set(outcomes) <= {"ok", "superseded", "preempted"}, outcomes
