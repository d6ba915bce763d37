"""Policy integrity: what would let one identity borrow another's rights, or a client name a
secret of the server, makes the policy invalid or is no setting at all."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codeagent_lsp import settings
from codeagent_lsp.engine import models
from codeagent_lsp.security import policy as policy_module
from codeagent_lsp.security.identity import Identity
from codeagent_lsp.security.policy import load_policy
from tests.e2e.test_node import Client, frame
from tests.security.test_audit_never_stops import start, stop
from tests.tiny_gguf import MODEL_NAME, TINY, write_tiny_gguf
from tests.unit.engine.test_pool import workers_of


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    "second",
    [
        f'name = "ci"\nsha256 = "{digest("viewer-token")}"\nrole = "viewer"',  # same name
        f'name = "other"\nsha256 = "{digest("admin-token")}"\nrole = "viewer"',  # same token
        f'name = "CI"\nsha256 = "{digest("viewer-token")}"\nrole = "viewer"',  # in other case
        f'name = "\uff23\uff29"\nsha256 = "{digest("viewer-token")}"\nrole = "viewer"',  # width
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
     ("actions.maxTokens", 10**6), ("documents.maxBytes", 10**12),
     ("completion.temperature", 1e308), ("engine.parkMaxMB", -1), ("engine.nGpuLayers", -2),
     ("engine.memoryLimitMB", -1), ("engine.parkMaxAgeHours", -1.0),
     # Python's JSON parser (the transport's) reads NaN and Infinity, which JSON has not.
     ("completion.temperature", math.nan), ("remote.readTimeout", math.inf),
     ("engine.parkMaxAgeHours", math.nan)],
)  # fmt: skip
def test_settings_are_bounded_for_every_client(key: str, value: float) -> None:
    section, leaf = key.split(".")
    merged, errors = settings.merge(settings.Settings(), {section: {leaf: value}})
    assert len(errors) == 1 and any(
        words in errors[0] for words in ("must be at most", "must be at least", "a finite number")
    ), errors
    assert merged == settings.Settings()


GOOD = '[defaults]\nrole = "viewer"\n'


def test_a_policy_file_others_could_change_locks_the_server(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    assert not load_policy(path).locked
    for mode in (0o664, 0o646):
        path.chmod(mode)
        assert "writable by its group or by everyone" in load_policy(path).locked
    path.chmod(0o644)
    os.chown(path, 12345, -1)
    assert "owned by another user (uid 12345)" in load_policy(path).locked
    os.chown(path, 0, -1)
    link = tmp_path / "link.toml"
    link.symlink_to(path)
    assert not load_policy(link).locked
    os.lchown(link, 12345, -1)
    assert "a symlink on its way" in load_policy(link).locked


def test_a_policy_file_in_a_folder_others_could_change_locks_the_server(tmp_path: Path) -> None:
    """The folders on the way count, a symlinked one too: whoever can write a folder can
    rename another file over the policy."""
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "policy.toml").write_text(GOOD)
    linked = tmp_path / "linked"
    linked.symlink_to(folder)
    assert not load_policy(linked / "policy.toml").locked
    os.lchown(linked, 12345, -1)  # a symlinked folder someone else owns
    assert "a symlink on its way" in load_policy(linked / "policy.toml").locked
    for mode, sticky_ok in ((0o777, False), (0o775, False), (0o1777, True)):
        folder.chmod(mode)
        locked = load_policy(folder / "policy.toml").locked
        assert bool(locked) != sticky_ok, (oct(mode), locked)
    folder.chmod(0o777)
    assert "a folder on its way" in load_policy(tmp_path / "etc/../etc/policy.toml").locked
    folder.chmod(0o755)
    os.chown(folder, 12345, -1)
    assert "owned by another user (uid 12345)" in load_policy(folder / "policy.toml").locked


def test_the_environment_cannot_replace_a_system_policy_unless_it_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, mine = tmp_path / "system.toml", tmp_path / "mine.toml"
    system.write_text(GOOD)
    mine.write_text('[defaults]\nrole = "admin"\n')
    monkeypatch.setattr(policy_module, "SYSTEM_PATH", system)
    monkeypatch.setenv("CODEAGENT_POLICY", str(mine))
    assert policy_module.policy_path() == system
    system.write_text(GOOD + "allow_env_policy = true\n")
    assert policy_module.policy_path() == mine
    system.unlink()
    assert policy_module.policy_path() == mine


async def test_over_stdio_a_world_writable_policy_refuses_every_request(tmp_path: Path) -> None:
    process, client = await start(tmp_path, GOOD, mode=0o666)
    answer = await client.request("codeagent/stats")
    assert "is not trusted" in answer["error"]["message"], answer
    assert "writable by its group or by everyone" in answer["error"]["message"]
    await stop(process, client)


async def test_a_model_renamed_over_once_hashed_is_not_the_one_loaded(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The policy allows one model, by its sha256. Once the server has checked that file and
    started its model worker, another model is renamed over its path. The server loads the
    file it opened and hashed: on a server that hashed the path and then had llama.cpp open the
    path again, the worker loaded the other model."""
    model = shutil.copy(tiny_model, tmp_path / "model.gguf")
    other = write_tiny_gguf(
        tmp_path / "other.gguf", seed=1, shape=dataclasses.replace(TINY, name="swapped-in")
    )
    allowed = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[defaults]\nrole = "member"\n\n[audit]\ndb = "{tmp_path / "a.db"}"\n\n'
                      f'[models]\nsha256 = ["{allowed}"]\n')  # fmt: skip
    env = {**os.environ, "CODEAGENT_POLICY": str(policy), "XDG_CACHE_HOME": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codeagent_lsp", "--log-file", str(tmp_path / "server.log"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert process.stdout is not None and process.stdin is not None
    client = Client(process.stdout, process.stdin)  # type: ignore[arg-type]
    options = {"model": str(model), "engine": {"threads": 1}, "completion": {"warm": False}}
    params = {"processId": None, "capabilities": {}, "rootUri": tmp_path.as_uri(),
              "initializationOptions": options}  # fmt: skip
    assert "result" in await client.request("initialize", params)
    client.writer.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))

    async def worker_started() -> None:  # the file was checked and hashed by then
        while not workers_of(process.pid):
            await asyncio.sleep(0.005)

    await asyncio.wait_for(worker_started(), 120)  # a guard against a hang, not a measure
    os.replace(other, model)
    while (stats := (await client.request("codeagent/stats"))["result"])["model"] is None:
        assert stats["problem"] is None, stats
        await asyncio.sleep(0.05)
    assert stats["model"]["name"] == MODEL_NAME, stats
    assert stats["model"]["path"] == str(model)
    await stop(process, client)


def test_a_model_that_is_no_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    """A folder, a FIFO (here with a writer, as an attacker would keep one, and a GGUF header
    in it) and /dev/zero: each refused by the file it is, before any read could block or never
    end, and named by the path the setting gave."""
    folder = tmp_path / "folder.gguf"
    folder.mkdir()
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    os.write(writer, b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    try:
        for path in (folder, fifo, Path("/dev/zero")):
            with pytest.raises(models.InvalidModel, match="it is not a regular file") as caught:
                models.open_model(path)
            assert str(path) in str(caught.value)
    finally:
        os.close(writer)
