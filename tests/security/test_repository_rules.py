"""Every result and every prompt obeys the repository rules, over stdio: a role limited to
`public-*` gets nothing of `secret-b` (symbols, hover, definition, completion context), and
`[prompt] deny` keeps a file out of every prompt's context (completion and each code action)
while navigation still finds it."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import accept_registrations
from tests.lsp.test_actions import actions_params
from tests.lsp.test_server import model_loaded, open_doc, stats
from tests.security.test_policy import policy_env, shut_down

__all__ = ["policy_env"]  # a fixture

POLICY = """
[defaults]
role = "contractor"

[roles.contractor]
features = ["completion", "hover", "navigation", "index", "stats", "explain", "tests"]
repositories = ["public-*"]

[prompt]
deny = ["internal/**"]

[audit]
db = "{db}"
store_prompts = true
"""
APP = (
    "from internal.keys import load_keys\nfrom lib import secret_function\n\n\n"
    'def handler():\n    """Handle a request."""\n    return load_keys() + secret_function()\n'
)
MARKERS = (
    "internal/keys.py",
    "SIGNING_KEY_MATERIAL",
    "lib.py",
    "SECRET_B_BODY",
    "SECRET DOCSTRING",
)
"""Names and text of files no prompt of this role may hold (the context names each file it
quotes, a signature included)."""


@pytest.fixture
def repositories(tmp_path: Path) -> Path:
    root = tmp_path / "checkouts"
    files = {
        "public-a/app.py": APP,
        "public-a/internal/keys.py": 'def load_keys():\n    return "SIGNING_KEY_MATERIAL"\n',
        "secret-b/lib.py": (
            'def secret_function():\n    """SECRET DOCSTRING."""\n    return "SECRET_B_BODY"\n'
        ),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    # A harmless name for a denied file: what it shows is internal/keys.py.
    (root / "public-a" / "helper.py").symlink_to("internal/keys.py")
    return root


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"])
)
async def governed(lsp_client: LanguageClient, tiny_model: Path, repositories: Path):
    """A server under POLICY with the workspace folders public-a and secret-b (tests name
    `policy_env` first: pytest-lsp starts the server before it resolves this fixture)."""
    options = {"model": str(tiny_model), "engine": {"threads": 1}}
    folders = [
        types.WorkspaceFolder((repositories / n).as_uri(), n) for n in ("public-a", "secret-b")
    ]
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options=options,
        workspace_folders=folders,
    )
    accept_registrations(lsp_client)
    await lsp_client.initialize_session(params)
    yield
    if not getattr(lsp_client, "shut_down", False):
        await lsp_client.shutdown_session()


async def indexed(client: LanguageClient) -> None:
    for _ in range(600):
        if (await stats(client)).get("codegraph", {}).get("ready"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the workspace was never indexed")


def prompts(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [
            p for (p,) in connection.execute("SELECT prompt FROM audit WHERE prompt IS NOT NULL")
        ]


@pytest.mark.policy(POLICY)
async def test_results_and_prompts_obey_the_repository_rules(
    policy_env: Path, governed: LanguageClient, repositories: Path
) -> None:
    client = governed
    await indexed(client)
    await model_loaded(client)
    names = set()
    for query in ("handler", "load_keys", "secret_function"):
        found = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query=query))
        names |= {s.name for s in found or []}
    # Navigation sees public-a, internal/ included; nothing of secret-b.
    assert {"handler", "load_keys"} <= names and "secret_function" not in names, names

    public = repositories / "public-a"
    uri = open_doc(client, public, "app.py", APP)
    at_secret = types.Position(6, APP.split("\n")[6].index("secret_function") + 2)
    where = types.TextDocumentPositionParams(types.TextDocumentIdentifier(uri), at_secret)
    hover = await client.text_document_hover_async(types.HoverParams(**vars_of(where)))
    assert hover is None or "SECRET" not in str(hover.contents)
    definition = await client.text_document_definition_async(
        types.DefinitionParams(**vars_of(where))
    )
    assert not definition, definition

    # Completion at the end of handler's body, then Explain of handler.
    end = types.Position(6, len(APP.split("\n")[6]))
    await client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(uri), end)
    )
    actions = await client.text_document_code_action_async(actions_params(uri, 6))
    explain = next(a for a in actions or [] if a.title == "Explain this code")
    await client.code_action_resolve_async(explain)
    await shut_down(client)
    sent = prompts(policy_env)
    assert len(sent) >= 2 and any("handler" in p for p in sent), sent
    for prompt in sent:
        assert not any(marker in prompt for marker in MARKERS), prompt


def vars_of(params: types.TextDocumentPositionParams) -> dict[str, object]:
    return {"text_document": params.text_document, "position": params.position}


SECRET_FILES = ("Credentials.py", "secrets.py", "SECRETS.py", "conf/.ENV.py", "Keys/server.KEY")
"""Secret names in any case: the built-in patterns (credentials*, secrets.*, .env*, *.key),
also reached through symlinks with harmless names."""


@pytest.fixture
def secret_files(workspace: Path) -> None:
    """Written before the server starts (tests name this fixture before `client`)."""
    for i, name in enumerate(SECRET_FILES):
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_text(f"def leaked_{i}():\n    pass\n")
    (workspace / ".gitignore").write_text("!secrets.py\n!Credentials.py\n")
    (workspace / "plain.py").write_text("def leaked_plain():\n    pass\n")
    # Harmless names for secret files, in the same folder and in another.
    (workspace / "notes.py").symlink_to("Credentials.py")
    (workspace / "conf" / "settings.py").symlink_to("../Keys/server.KEY")


@pytest.mark.settings({"codegraph": {"exclude": ["!secrets.*", "!Credentials*", "!*.key"]}})
async def test_secrets_stay_out_whatever_the_settings(
    secret_files: None, client: LanguageClient
) -> None:
    await indexed(client)
    found = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="leaked"))
    assert {s.name for s in found or []} == {"leaked_plain"}


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"])
)
async def governed_through_links(
    lsp_client: LanguageClient, tiny_model: Path, repositories: Path, tmp_path: Path
):
    """As `governed`, with the workspace folders named through symlinks to the checkouts (a
    home folder's link to a shared disk)."""
    links = tmp_path / "links"
    links.mkdir()
    for name in ("public-a", "secret-b"):
        (links / name).symlink_to(repositories / name, target_is_directory=True)
    folders = [types.WorkspaceFolder((links / n).as_uri(), n) for n in ("public-a", "secret-b")]
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"model": str(tiny_model), "engine": {"threads": 1}},
        workspace_folders=folders,
    )
    accept_registrations(lsp_client)
    await lsp_client.initialize_session(params)
    lsp_client.links = links  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


@pytest.mark.policy(POLICY)
async def test_a_file_is_of_its_repository_whichever_path_names_it(
    policy_env: Path, governed_through_links: LanguageClient, repositories: Path
) -> None:
    """Editors name a file through the symlinked folder or by its real path (one resolves
    links, a file opened from a terminal does not): either way it is the same file of the same
    repository, whose rules hold and whose code actions are offered."""
    client = governed_through_links
    await indexed(client)
    secret_text = (repositories / "secret-b" / "lib.py").read_text()
    for folder in (client.links, repositories):  # type: ignore[attr-defined]
        secret = open_doc(client, folder / "secret-b", "lib.py", secret_text)
        where = types.HoverParams(types.TextDocumentIdentifier(secret), types.Position(0, 6))
        with pytest.raises(JsonRpcException, match="denied: repository 'secret-b'"):
            await client.text_document_hover_async(where)
        public = open_doc(client, folder / "public-a", "app.py", APP)
        actions = await client.text_document_code_action_async(actions_params(public, 6))
        assert {a.title for a in actions or []} >= {"Explain this code"}
