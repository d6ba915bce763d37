"""Logs go to the log file, never to stdout, and hold no source code by default, even at the
most verbose level."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import accept_registrations
from tests.lsp.test_server import CURSOR, PYTHON, inline, open_doc

LOG_FILE = Path(tempfile.gettempdir()) / f"codeagent-test-{os.getpid()}.log"
CANARY = "canary_7f3a9d_identifier"


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=[
            sys.executable,
            "-m",
            "codeagent_lsp",
            "--log-file",
            str(LOG_FILE),
            "--log-level",
            "debug",
        ]
    ),
)
async def verbose_client(lsp_client: LanguageClient, tiny_model: Path, workspace: Path):
    LOG_FILE.unlink(missing_ok=True)
    params = types.InitializeParams(
        capabilities=client_capabilities("neovim"),
        initialization_options={"model": str(tiny_model), "engine": {"threads": 1}},
        workspace_folders=[types.WorkspaceFolder(workspace.as_uri(), "project")],
    )
    accept_registrations(lsp_client)
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


async def test_debug_log_holds_no_code(verbose_client: LanguageClient, workspace: Path):
    uri = open_doc(verbose_client, workspace, "secret.py", f"{CANARY} = 1\n" + PYTHON)
    position = types.Position(CURSOR.line + 1, CURSOR.character)
    result = await inline(verbose_client, uri, position)
    assert result.items
    log = LOG_FILE.read_text()
    assert "codeagent_lsp" in log  # the debug log was written ...
    assert CANARY not in log  # ... without the document's text
    assert "return width" not in log
