"""Secrets out of prompts, logs and responses: the patterns, the log filter, and a canary
planted in a workspace followed end to end over LSP with the tiny model."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import tempfile
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls import uris
from pytest_lsp import ClientServerConfig, LanguageClient

from codeagent_lsp.security.redact import RedactingFilter, looks_random, redact
from tests.conftest import REPO
from tests.lsp.test_server import stats
from tests.security.test_policy import policy_env, shut_down, start_session  # noqa: F401 (fixture)

GITHUB = "ghp_" + "C4nary0GitHubT0ken1x2y3z4w5v6u7t8s9r0"
AWS = "AKIA" + "CANARY7EXAMPLE42"
PASSWORD = "Canary-Passw0rd-77"
RANDOM = "q8Zr2Lx0Vb7Nc4Mw9Kd1Tf6Hj3Pg5Ys0Ae8Ui2"
CANARIES = (GITHUB, AWS, PASSWORD, RANDOM, "C4nary0GitHub", "CANARY7EXAMPLE")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f'token = "{GITHUB}"', GITHUB),
        (f"aws_access_key_id = {AWS}", AWS),
        ("SLACK = 'xoxb-123456789012-abcdefghijkl'", "xoxb-123456789012"),
        ("glpat-" + "abcdefghij0123456789", "glpat-abcdefghij"),
        ("jwt: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "eyJ"),
        (f'DB_PASSWORD="{PASSWORD}"', PASSWORD),
        (f"password: {PASSWORD}", PASSWORD),
        ("url = 'https://deploy:hunter2x@git.internal/repo.git'", "hunter2x"),
        (f'blob = "{RANDOM}"', RANDOM),
        ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----", "MHcCAQEEIB"),
    ],
)
def test_known_shapes_are_redacted(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "<redacted" in redact(text)


@pytest.mark.parametrize(
    "code",
    [
        "token = self.get_token()",
        "if token == expected:",
        "prompt_tokens = len(tokens)",
        'password = getpass.getpass("Password: ")',
        "sha = '1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32'",
        "class InvalidBase64PaddingDefect(MessageDefect):",
        "ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'",
        "uuid = '123e4567-e89b-12d3-a456-426614174000'",
        "max_tokens: 512",
    ],
)
def test_ordinary_code_is_left_alone(code: str) -> None:
    assert redact(code) == code


def test_this_projects_own_source_is_left_alone() -> None:
    """Prompts are mostly code: redaction must not eat it (the regexes that name secret shapes
    in redact.py itself are the exception)."""
    for path in (REPO / "codeagent_lsp").rglob("*.py"):
        if path.name != "redact.py":
            text = path.read_text(encoding="utf-8")
            assert redact(text) == text, path


def test_entropy_tells_keys_from_identifiers() -> None:
    assert looks_random(RANDOM)
    assert not looks_random("structEndArchive64Locator")
    assert not looks_random("test_secrets_in_allowed_files_are_redacted")


def test_the_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("connecting with %s", f"password={PASSWORD}")
        try:
            raise ValueError(f"bad token {GITHUB}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert "failed" in text and "ValueError" in text
    assert PASSWORD not in text and GITHUB not in text


# --- end to end ---------------------------------------------------------------------------------

LOG = Path(tempfile.mkdtemp(prefix="codeagent-redaction-")) / "server.log"
STORE_ALL = (
    '[defaults]\nrole = "member"\n[audit]\ndb = "{db}"\nstore_prompts = true\nstore_code = true\n'
)
SETTINGS = f"""\"\"\"Service settings.\"\"\"

GITHUB_TOKEN = "{GITHUB}"
AWS_ACCESS_KEY_ID = "{AWS}"
DATABASE_URL = "postgres://app:{PASSWORD}@db.internal/app"
SIGNING_MATERIAL = "{RANDOM}"


def database_url():
    return DATABASE_URL
"""
APP = """from settings import GITHUB_TOKEN, database_url


def connect(client):
    client.login(GITHUB_TOKEN)
    return client.open(database_url())
"""


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=[
            sys.executable,
            "-m",
            "codeagent_lsp",
            "--log-file",
            str(LOG),
            "--log-level",
            "debug",
        ]
    )
)
async def logged(lsp_client: LanguageClient, tiny_model: Path, workspace: Path):
    """A server logging at debug level, prompts included (logCode), under the test's policy
    (tests name `policy_env` first)."""
    (workspace / "settings.py").write_text(SETTINGS)
    (workspace / "app.py").write_text(APP)
    (workspace / ".env").write_text(f"GITHUB_TOKEN={GITHUB}\n")
    await start_session(lsp_client, tiny_model, workspace, logging={"logCode": True})
    yield
    if not getattr(lsp_client, "shut_down", False):
        await lsp_client.shutdown_session()


def _open(client: LanguageClient, path: Path) -> str:
    uri = path.as_uri()
    item = types.TextDocumentItem(uri, "python", 1, path.read_text())
    client.text_document_did_open(types.DidOpenTextDocumentParams(item))
    return uri


async def _indexed(client: LanguageClient) -> None:
    for _ in range(600):  # the index of two files is ready in well under a minute
        if (await stats(client)).get("codegraph", {}).get("ready"):
            return
        await asyncio.sleep(0.1)


async def _complete(client: LanguageClient, uri: str, line: int, col: int) -> list[str]:
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(line, col),
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
        )
    )
    return [str(item.insert_text) for item in result.items] if result else []


async def _resolve_all(client: LanguageClient, uri: str, line: int) -> list[str]:
    here = types.Range(types.Position(line, 0), types.Position(line, 0))
    params = types.CodeActionParams(
        types.TextDocumentIdentifier(uri), here, types.CodeActionContext(diagnostics=[])
    )
    answers = []
    for action in await client.text_document_code_action_async(params) or []:
        resolved = await client.code_action_resolve_async(action)
        answers.append(repr(resolved))
    return answers


@pytest.mark.policy(STORE_ALL)
async def test_a_planted_canary_never_reaches_a_prompt_a_log_or_a_response(
    policy_env: Path,  # noqa: F811 (the fixture imported above)
    logged: LanguageClient,
    workspace: Path,
) -> None:
    settings_uri = _open(logged, workspace / "settings.py")
    app_uri = _open(logged, workspace / "app.py")
    await _indexed(logged)
    responses = await _complete(logged, settings_uri, 9, 4)
    responses += await _complete(logged, app_uri, 5, 4)
    responses += await _resolve_all(logged, settings_uri, 8)
    responses += [m.message for m in logged.messages]
    responses += [Path(uris.to_fs_path(d.uri)).read_text() for d in logged.shown_documents]
    await shut_down(logged)

    rows = (
        sqlite3.connect(policy_env)
        .execute("SELECT feature, prompt, response FROM audit WHERE prompt IS NOT NULL")
        .fetchall()
    )
    prompts = [prompt for _, prompt, _ in rows]
    assert {"completion", "explain"} <= {feature for feature, _, _ in rows}
    assert any("<redacted>" in p and "GITHUB_TOKEN" in p for p in prompts)  # the file was there
    responses += [response or "" for _, _, response in rows]
    log = LOG.read_text()
    assert "prompt for" in log  # prompts were logged (logCode at debug level)
    for canary in CANARIES:
        for prompt in prompts:
            assert canary not in prompt
        for response in responses:
            assert canary not in response
        assert canary not in log
