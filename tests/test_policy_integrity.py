"""Policy integrity: what would let one identity borrow another's rights, or a client name a
secret of the server, makes the policy invalid or is no setting at all."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from codeagent_lsp import settings
from codeagent_lsp.security.identity import Identity
from codeagent_lsp.security.policy import load_policy


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    "second",
    [
        f'name = "ci"\nsha256 = "{digest("viewer-token")}"\nrole = "viewer"',  # same name
        f'name = "other"\nsha256 = "{digest("admin-token")}"\nrole = "viewer"',  # same token
    ],
)
def test_two_tokens_with_one_name_or_hash_lock_the_policy(tmp_path: Path, second: str) -> None:
    path = tmp_path / "policy.toml"
    first = f'name = "ci"\nsha256 = "{digest("admin-token")}"\nrole = "admin"'
    path.write_text(f"[[token]]\n{first}\n\n[[token]]\n{second}\n")
    policy = load_policy(path)
    assert "appears more than once" in policy.locked
    viewer = Identity("ci", (), "tcp", token_name="ci")
    assert not policy.decide(viewer, "completion").allowed


@pytest.mark.parametrize("key", ["tokenEnv", "tokenFile"])
def test_a_client_names_no_file_or_variable_for_the_inference_token(key: str) -> None:
    merged, errors = settings.merge(settings.Settings(), {"remote": {key: "HOME"}})
    assert errors == [f"codeagent.remote.{key}: unknown setting (ignored)"]
    assert merged == settings.Settings()


def test_the_inference_token_file_is_the_administrators(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[network]\ntoken_file = "/etc/codeagent-lsp/inference-token"\n')
    assert load_policy(path).inference_token_file == "/etc/codeagent-lsp/inference-token"
    path.write_text('[audit]\non_failure = "maybe"\n')
    assert 'audit.on_failure must be "refuse" or "continue"' in load_policy(path).locked


@pytest.mark.parametrize(
    ("key", "value"),
    [("engine.contextSize", 500000), ("engine.slots", 100000), ("completion.maxTokens", 10**6),
     ("actions.maxTokens", 10**6), ("documents.maxBytes", 10**12)],
)  # fmt: skip
def test_settings_are_bounded_for_every_client(key: str, value: int) -> None:
    section, leaf = key.split(".")
    merged, errors = settings.merge(settings.Settings(), {section: {leaf: value}})
    assert errors and "must be at most" in errors[0]
    assert merged == settings.Settings()
