"""Shared fixtures: the tiny GGUF (real llama.cpp, milliseconds per request) and a language
client driving `codeagent-lsp` over stdio with the capabilities of real editors."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.settings import CodegraphSettings
from tests.tiny_gguf import write_tiny_gguf

EDITORS = ["visual-studio-code", "neovim"]
REPO = Path(__file__).resolve().parents[1]
REAL_MODEL = REPO / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
PROJECTS = Path(__file__).parent / "fixtures" / "projects"


@pytest.fixture(autouse=True, scope="session")
def isolated_policy_and_audit(tmp_path_factory: pytest.TempPathFactory):
    """No administrator policy from this machine, audit logs and caches in temporary folders:
    servers the tests start inherit this environment."""
    saved = {k: os.environ.get(k) for k in ("CODEAGENT_POLICY", "XDG_STATE_HOME", "XDG_CACHE_HOME")}
    os.environ.pop("CODEAGENT_POLICY", None)
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    # Parked KV slots of one run must not answer the next (pytest reuses temporary paths).
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture
def python_index(tmp_path: Path):
    """The Python fixture project, copied and indexed: (WorkspaceIndex, root)."""
    root = tmp_path / "python"
    shutil.copytree(PROJECTS / "python", root)
    index = WorkspaceIndex([("python", root)], CodegraphSettings(cacheDir=str(tmp_path / "db")))
    index.index_all()
    yield index, root
    index.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


def accept_registrations(client: LanguageClient) -> None:
    """Answer client/registerCapability as editors do (the server registers file watchers)."""

    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(_params: types.RegistrationParams) -> None:
        return None


def settings_marker(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("settings")
    return marker.args[0] if marker else {}


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"]),
    params=EDITORS,
)
async def client(
    lsp_client: LanguageClient, request: pytest.FixtureRequest, tiny_model: Path, workspace: Path
):
    """A server on the tiny model; `@pytest.mark.settings({...})` adds initializationOptions."""
    # One thread: on a busy 2-core machine llama.cpp's threads wait on each other far longer
    # than the tiny model computes.
    options = {"model": str(tiny_model), "engine": {"threads": 1}, **settings_marker(request)}
    params = types.InitializeParams(
        capabilities=client_capabilities(request.param),
        initialization_options=options,
        workspace_folders=[types.WorkspaceFolder(workspace.as_uri(), "project")],
    )
    accept_registrations(lsp_client)
    # Kept on the client so tests can read the negotiated capabilities.
    lsp_client.initialize_result = await lsp_client.initialize_session(params)  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()
