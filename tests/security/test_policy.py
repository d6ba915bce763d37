"""The administrator's policy: parsing, defaults, decisions, and denials over LSP (a clear
error, an audit row) with a server started under $CODEAGENT_POLICY."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from codeagent_lsp.security import audit
from codeagent_lsp.security.identity import Identity, os_identity
from codeagent_lsp.security.policy import Policy, PolicyError, load_policy, parse
from tests.conftest import accept_registrations

ALICE = Identity("alice", ("dev",), "stdio")
TOKEN = "s3cret-token-for-ci"

FULL = f"""
[defaults]
role = "viewer"

[roles.contractor]
features = ["completion", "hover"]
repositories = ["public-*"]

[[assign]]
role = "member"
groups = ["dev"]

[[assign]]
role = "admin"
users = ["root-admin"]

[[token]]
name = "ci"
sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"
user = "ci-bot"
groups = ["ci"]
role = "contractor"

[prompt]
deny = ["*.sql", "internal/**"]

[index]
repositories = ["app", "public-*"]
deny = ["*.csv"]

[models]
sha256 = ["{"a" * 64}"]
paths = ["/opt/models/*.gguf"]

[network]
inference = ["https://llm.corp.example:8443"]

[audit]
db = "/tmp/x/audit.sqlite3"
store_prompts = true
"""


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_without_a_file_the_defaults_apply() -> None:
    policy = load_policy()
    assert policy.source is None and not policy.locked
    assert policy.roles_of(os_identity()) == ("member",)
    for feature in ("completion", "hover", "navigation", "explain", "tests", "fix", "index"):
        assert policy.decide(ALICE, feature, "app", "src/main.py").allowed
    assert not policy.decide(ALICE, "completion", "app", ".env").allowed
    assert not policy.decide(ALICE, "explain", "app", "deploy/id_rsa").allowed
    assert not policy.decide(ALICE, "fix", "app", "certs/server.pem").allowed
    assert policy.decide(ALICE, "hover", "app", ".env").allowed  # nothing goes to the model
    assert policy.model_allowed("b" * 64).allowed
    assert policy.model_path_allowed(Path("/anywhere/m.gguf")).allowed
    assert policy.inference_urls == ()  # loopback only
    assert not policy.audit.store_prompts and policy.audit.db_path().name == "audit.sqlite3"


def test_a_full_policy_parses_and_decides(tmp_path: Path) -> None:
    policy = parse(_policy(tmp_path, FULL))
    assert policy.roles_of(ALICE) == ("member",)
    assert policy.roles_of(Identity("bob", ("sales",), "stdio")) == ("viewer",)
    viewer = Identity("bob", ("sales",), "stdio")
    assert policy.decide(viewer, "hover", "app", "a.py").allowed
    denied = policy.decide(viewer, "completion", "app", "a.py")
    assert not denied.allowed and "viewer may not use completion" in denied.reason
    assert not policy.decide(ALICE, "completion", "app", "db/schema.sql").allowed
    assert not policy.decide(ALICE, "completion", "app", "internal/keys.py").allowed
    assert policy.decide(ALICE, "completion", "app", "src/schema.py").allowed
    assert policy.index.repository_allowed("public-docs") and not policy.index.repository_allowed(
        "secret"
    )
    assert policy.model_allowed("A" * 64).allowed and not policy.model_allowed("b" * 64).allowed
    assert policy.model_path_allowed(Path("/opt/models/qwen.gguf")).allowed
    outside = policy.model_path_allowed(Path("/tmp/models/../evil.gguf"))
    assert not outside.allowed and "/tmp/evil.gguf is outside the paths" in outside.reason
    assert policy.inference_urls == ("https://llm.corp.example:8443",)
    assert policy.audit.store_prompts and not policy.audit.store_code


def test_tokens_give_identities_and_roles(tmp_path: Path) -> None:
    policy = parse(_policy(tmp_path, FULL))
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    ci = policy.identity_for_token_hash(digest, "tcp")
    assert ci == Identity("ci-bot", ("ci",), "tcp", token_name="ci")
    assert policy.identity_for_token_hash("0" * 64, "tcp") is None
    assert policy.roles_of(ci) == ("contractor",)
    assert policy.decide(ci, "completion", "public-sdk", "a.py").allowed
    assert not policy.decide(ci, "completion", "app", "a.py").allowed  # repository
    assert not policy.decide(ci, "explain", "public-sdk", "a.py").allowed  # feature


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[roles.x\n", "not valid TOML"),
        ("[rolez]\n", "unknown key(s) ['rolez']"),
        ('[defaults]\nrole = "boss"\n', "undefined role(s) ['boss']"),
        ('[roles.r]\nfeatures = ["telepathy"]\n', "unknown feature(s) ['telepathy']"),
        ('[[token]]\nname = "t"\nsha256 = "xyz"\n', "sha256 (64 hex digits)"),
        ('[models]\nsha256 = "abc"\n', "models.sha256 must be a list of strings"),
        ('[models]\npaths = ["models/*"]\n', "globs must be absolute"),
        ('[network]\ninference = ["ftp://x"]\n', "is not an http(s) URL"),
        ("[audit]\nstore_prompts = 1\n", "audit.store_prompts must be true or false"),
    ],
)
def test_a_bad_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = _policy(tmp_path, text)
    with pytest.raises(PolicyError, match="policy file") as error:
        parse(path)
    assert message in str(error.value)


def test_a_bad_file_locks_everything(tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path, "[roles.x\n"))
    assert policy.locked and "not valid TOML" in policy.locked
    assert not policy.decide(ALICE, "hover").allowed
    assert not policy.model_allowed("a" * 64).allowed
    assert policy.identity_for_token_hash("a" * 64, "tcp") is None


def test_a_missing_named_file_locks_too(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "nowhere.toml").locked


def test_with_a_file_but_no_default_role_strangers_get_nothing(tmp_path: Path) -> None:
    policy = parse(_policy(tmp_path, '[[assign]]\nrole = "admin"\nusers = ["alice"]\n'))
    assert policy.decide(ALICE, "completion", "app", "a.py").allowed
    stranger = policy.decide(Identity("eve", (), "stdio"), "hover")
    assert not stranger.allowed and "no role for user 'eve'" in stranger.reason


def test_the_default_policy_value_is_the_same_as_no_file() -> None:
    assert load_policy() == Policy()


# --- over LSP -----------------------------------------------------------------------------------


@pytest.fixture
def policy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """Writes the test's policy (`@pytest.mark.policy(text)`, {db} = its audit database) and
    points $CODEAGENT_POLICY at it before the server starts."""
    marker = request.node.get_closest_marker("policy")
    db = tmp_path / "audit.sqlite3"
    text = marker.args[0].replace("{db}", str(db)) if marker else ""
    monkeypatch.setenv("CODEAGENT_POLICY", str(_policy(tmp_path, text)))
    return db


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codeagent_lsp"])
)
async def governed(lsp_client: LanguageClient, tiny_model: Path, workspace: Path):
    """A server started under the test's policy: tests name `policy_env` BEFORE this fixture,
    because pytest-lsp starts the server before it resolves this function's arguments."""
    await start_session(lsp_client, tiny_model, workspace)
    yield
    if not getattr(lsp_client, "shut_down", False):
        await lsp_client.shutdown_session()


async def start_session(
    client: LanguageClient, tiny_model: Path, workspace: Path, **settings: object
) -> None:
    options = {"model": str(tiny_model), "engine": {"threads": 1}, **settings}
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options=options,
        workspace_folders=[types.WorkspaceFolder(workspace.as_uri(), "project")],
    )
    accept_registrations(client)
    await client.initialize_session(params)


async def shut_down(client: LanguageClient) -> None:
    """End the session now: the server flushes its audit log before it answers."""
    await client.shutdown_session()
    client.shut_down = True  # type: ignore[attr-defined]


def _open(client: LanguageClient, path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text))
    )
    return uri


def _rows(db: Path) -> list[tuple[str, str, str | None]]:
    query = "SELECT feature, decision, reason FROM audit ORDER BY id"
    return sqlite3.connect(db).execute(query).fetchall()


async def _complete(client: LanguageClient, uri: str) -> types.InlineCompletionList | None:
    return await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(0, 4),
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
        )
    )


VIEWER = '[defaults]\nrole = "viewer"\n[audit]\ndb = "{db}"\n'


@pytest.mark.policy(VIEWER)
async def test_a_denied_feature_gets_a_clear_error_and_is_audited(
    policy_env: Path, governed: LanguageClient, workspace: Path
) -> None:
    uri = _open(governed, workspace / "main.py", "def f():\n    return 1\n")
    with pytest.raises(JsonRpcException) as error:
        await _complete(governed, uri)
    assert error.value.code == -32803
    assert "denied: role viewer may not use completion" in error.value.message
    hover = types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(0, 4))
    await governed.text_document_hover_async(hover)  # allowed: answered, no error
    actions = await governed.text_document_code_action_async(
        types.CodeActionParams(
            types.TextDocumentIdentifier(uri),
            types.Range(types.Position(0, 0), types.Position(0, 0)),
            types.CodeActionContext(diagnostics=[]),
        )
    )
    assert not actions  # a viewer may use none of them
    await shut_down(governed)
    rows = _rows(policy_env)
    assert ("completion", "deny", "role viewer may not use completion (policy "
            f"{policy_env.parent / 'policy.toml'})") in rows  # fmt: skip
    assert ("hover", "allow", None) in rows
    assert audit.verify(policy_env).ok


MEMBER = '[defaults]\nrole = "member"\n[prompt]\ndeny = ["*.sql"]\n[audit]\ndb = "{db}"\n'


@pytest.mark.policy(MEMBER)
async def test_secret_and_denied_files_never_go_to_the_model(
    policy_env: Path, governed: LanguageClient, workspace: Path
) -> None:
    for name in (".env", "schema.sql", "keys/id_ed25519"):
        uri = _open(governed, workspace / name, "SECRET=1\n")
        with pytest.raises(JsonRpcException, match="may not be sent to the model"):
            await _complete(governed, uri)
    ok = _open(governed, workspace / "app.py", "def f():\n    return 1\n")
    assert await _complete(governed, ok) is not None
    await shut_down(governed)
    decisions = [(f, d) for f, d, _ in _rows(policy_env) if f == "completion"]
    assert decisions == [("completion", "deny")] * 3 + [("completion", "allow")]


MEMBERS = '[defaults]\nrole = "member"\n'
MODEL_RULES = [
    pytest.param(
        "is not allowed by policy",
        marks=pytest.mark.policy(f'{MEMBERS}[models]\nsha256 = ["{"0" * 64}"]\n'),
        id="sha256",
    ),
    pytest.param(
        "is outside the paths",
        marks=pytest.mark.policy(f'{MEMBERS}[models]\npaths = ["/opt/models/*"]\n'),
        id="paths",
    ),
]


@pytest.mark.parametrize("refusal", MODEL_RULES)
async def test_a_model_the_policy_does_not_allow_is_not_loaded(
    policy_env: Path, governed: LanguageClient, workspace: Path, refusal: str
) -> None:
    uri = _open(governed, workspace / "app.py", "def f():\n    return 1\n")
    result = await _complete(governed, uri)
    assert result is not None and not result.items
    for _ in range(3):  # the refusal is told once, maybe after other messages
        if any(refusal in m.message for m in governed.messages):
            break
        await governed.wait_for_notification(types.WINDOW_SHOW_MESSAGE)
    assert any(refusal in m.message for m in governed.messages)


@pytest.mark.policy("[defaults\nrole = 'admin'\n")
async def test_a_broken_policy_refuses_everything_and_says_why(
    policy_env: Path, governed: LanguageClient, workspace: Path
) -> None:
    uri = _open(governed, workspace / "app.py", "def f():\n    return 1\n")
    with pytest.raises(JsonRpcException, match=r"not valid TOML.*every request is refused"):
        await _complete(governed, uri)
    assert any("not valid TOML" in m.message for m in governed.messages)
