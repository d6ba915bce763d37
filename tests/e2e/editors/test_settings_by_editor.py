"""Settings sent the way VS Code and Helix send them reach the server: a completion's model
call stops at the `completion.maxTokens` the user set (the default is 48). Neither editor runs
here, so a pytest-lsp client speaks for it, on the channel its documentation names: VS Code
(vscode-languageclient with `synchronize.configurationSection`) hands the `codeagent` section of
`contributes.configuration` over as initializationOptions and answers workspace/configuration
from it; Helix sends languages.toml's `config` as initializationOptions and answers
workspace/configuration by looking the section up inside `config`. Neovim's `settings` and
Emacs's `eglot-workspace-configuration` are proven in the real editors
(test_neovim_ghost_text.py, test_emacs_eglot.py)."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from codeagent_lsp import settings
from tests.conftest import REPO, accept_registrations
from tests.e2e.test_editors import _nested
from tests.lsp.test_server import inline, open_doc, stats

EDITORS = REPO / "editors"


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"]),
)
async def editor(lsp_client: LanguageClient):
    """A client the test initializes in the editor's own way."""
    accept_registrations(lsp_client)
    yield
    await lsp_client.shutdown_session()


async def generated_tokens(client: LanguageClient, workspace: Path) -> int:
    """One ghost-text request; the tokens its model call generated."""
    uri = open_doc(client, workspace, "arith.py", "def multiply(a, b):\n    return \n")
    await inline(client, uri, types.Position(line=1, character=11))
    (call,) = [r for r in (await stats(client))["records"] if r["outcome"] == "ok"]
    return call["generatedTokens"]


def _start(options: dict[str, Any], workspace: Path, capabilities: types.ClientCapabilities):
    return types.InitializeParams(
        capabilities=capabilities,
        initialization_options=options,
        workspace_folders=[types.WorkspaceFolder(workspace.as_uri(), "project")],
    )


async def test_vscode_settings_reach_the_server(
    editor: LanguageClient, tiny_model: Path, workspace: Path
):
    manifest = json.loads((EDITORS / "vscode" / "package.json").read_text())
    (section,) = [c for c in manifest["contributes"]["configuration"] if c["id"] == "codeagent"]
    flat = {key: schema["default"] for key, schema in section["properties"].items()}
    # the user's settings.json over the contributed defaults
    flat |= {
        "codeagent.model": str(tiny_model),
        "codeagent.engine.threads": 1,
        "codeagent.completion.maxTokens": 9,
        "codeagent.completion.warm": False,
    }
    tree = _nested(flat)  # what getConfiguration().get("codeagent") hands the extension
    editor.set_configuration({settings.SECTION: tree})  # answers workspace/configuration
    capabilities = client_capabilities("visual-studio-code")
    await editor.initialize_session(_start(tree, workspace, capabilities))
    assert await generated_tokens(editor, workspace) == 9


async def test_helix_config_reaches_the_server(
    editor: LanguageClient, tiny_model: Path, workspace: Path
):
    # the user's languages.toml: the repository's, with its maxTokens changed to 9
    text = (EDITORS / "helix" / "languages.toml").read_text()
    assert "maxTokens = 48" in text
    config = tomllib.loads(text.replace("maxTokens = 48", "maxTokens = 9"))
    options = config["language-server"]["codeagent"]["config"]
    options |= {"model": str(tiny_model), "engine": {"threads": 1}}
    options["completion"]["warm"] = False

    # Helix answers workspace/configuration with the section's dotted path inside `config`,
    # as pytest-lsp's client does with what it is given: here nothing (no `codeagent` key)
    editor.set_configuration(options)
    capabilities = types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(configuration=True),
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities()
        ),
    )
    await editor.initialize_session(_start(options, workspace, capabilities))
    assert await generated_tokens(editor, workspace) == 9
