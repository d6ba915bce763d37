"""`codeagent-lsp doctor` on this machine (no GPU): a healthy setup passes, and each fault of
the deployment checklist, provoked for real, fails the check it belongs to with its fix and
makes the command exit 1: a missing model, a wrong sha256 (registry or policy), a broken
policy, an unwritable audit log, a replica down, a replica refusing the token. A worker that
dies of SIGILL at its first decode is reported with the configuration that worked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeagent_lsp.bench.replica import LocalReplica, free_port
from codeagent_lsp.doctor.engine import CPUINFO_FLAGS, build_cpu_features, cpu_check, cpu_flags
from codeagent_lsp.engine import faults
from codeagent_lsp.settings import EngineSettings
from tests.conftest import PROJECTS, REPO
from tests.loopback import API_KEY

CLI = [sys.executable, "-m", "codeagent_lsp"]


@pytest.fixture(scope="module")
def replica(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalReplica]:
    """A llama_cpp.server replica on loopback that wants the bearer token API_KEY."""
    started = LocalReplica(
        tiny_model, tmp_path_factory.mktemp("replica") / "log", api_key=API_KEY
    ).start()
    yield started
    started.kill()


class Setup:
    """A deployment in a temporary folder: a registered model, a policy pinning it, an audit
    log, an indexed root, and the bearer token file for the replica."""

    def __init__(self, base: Path, tiny_model: Path) -> None:
        self.base = base
        self.models = base / "models"
        self.models.mkdir()
        self.model = self.models / "tiny.gguf"
        shutil.copy(tiny_model, self.model)
        self.sha256 = hashlib.sha256(self.model.read_bytes()).hexdigest()
        self.root = base / "python"
        shutil.copytree(PROJECTS / "python", self.root)
        self.token = base / "token"
        self.token.write_text(API_KEY)
        self.audit = base / "state" / "audit.sqlite3"
        self.policy = base / "policy.toml"
        self.write_policy()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "XDG_CACHE_HOME": str(base / "cache"),
            "XDG_STATE_HOME": str(base / "state"),
            "CODEAGENT_POLICY": str(self.policy),  # for the headless commands' audit rows
        }
        self.cli("model", "add", str(self.model), "--name", "tiny", "--models-dir",
                 str(self.models))  # fmt: skip
        self.cli("index", str(self.root))

    def write_policy(self, models: str = "", audit: str = "") -> None:
        self.policy.write_text(
            '[defaults]\nrole = "member"\n'
            f'[models]\nsha256 = ["{models or self.sha256}"]\n'
            f'[audit]\ndb = "{audit or self.audit}"\n'
            f'[network]\ntoken_file = "{self.token}"\n',
            encoding="utf-8",
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], cwd=self.base, env=self.env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip

    def doctor(self, *args: str, model: str = "tiny") -> tuple[int, dict[str, dict]]:
        """Exit status and the checks by name, from --json."""
        out = self.cli(
            "doctor", "--json", "--policy", str(self.policy), "--model", model,
            "--models-dir", str(self.models), "--threads", "1", "--root", str(self.root), *args,
        )  # fmt: skip
        report = json.loads(out.stdout)
        assert report["status"] == ("fail" if out.returncode else report["status"])
        return out.returncode, {check["name"]: check for check in report["checks"]}


@pytest.fixture
def setup(tmp_path: Path, tiny_model: Path) -> Setup:
    return Setup(tmp_path, tiny_model)


def failed(checks: dict[str, dict]) -> list[str]:
    return sorted(name for name, check in checks.items() if check["status"] == "fail")


def test_a_healthy_setup_passes_every_check(setup: Setup, replica: LocalReplica):
    status, checks = setup.doctor("--remote", replica.url)
    assert status == 0, failed(checks)
    for name in (
        "llama.cpp build",
        "devices",
        "decode",
        "model file",
        "sha256",
        "template",
        "memory",
        "policy file",
        "roles",
        "denied paths",
        "log",
        "content",
        "egress guard",
        "interfaces",
        f"replica {replica.url}",
        "root python",
        "index",
    ):
        assert checks[name]["status"] == "ok", checks[name]  # fmt: skip
    assert checks["sha256"]["data"]["sha256"] == setup.sha256
    assert "the policy" in checks["sha256"]["message"]
    assert checks["policy file"]["data"]["via"] == "$CODEAGENT_POLICY"
    assert checks["template"]["data"]["family"] == "qwen2.5-coder"
    assert checks["decode"]["data"]["record"]["generatedTokens"] > 0
    devices = checks["devices"]["data"]["devices"]
    assert devices and all(d["totalBytes"] >= d["freeBytes"] > 0 for d in devices)
    assert checks["egress guard"]["data"]["refused"] == ["connection to 192.0.2.1:9"]
    names = [i["name"] for i in checks["interfaces"]["data"]["interfaces"]]
    assert "lo" in names
    assert "127.0.0.1" in checks["interfaces"]["data"]["interfaces"][names.index("lo")]["addresses"]
    served = checks[f"replica {replica.url}"]
    assert served["data"]["steps"][:3] == ["reachable", "plaintext", "token accepted"]
    assert served["data"]["models"] == ["tiny"] and served["data"]["record"]["generatedTokens"]
    assert checks["index"]["data"]["files"]["python"] > 0
    assert checks["log"]["message"].endswith("will be created at the first request")


def test_the_table_names_each_fail_and_its_fix(setup: Setup):
    setup.policy.write_text("[defaults\nrole = ", encoding="utf-8")
    out = setup.cli("doctor", "--policy", str(setup.policy), "--model", "tiny", "--models-dir",
                    str(setup.models), "--threads", "1")  # fmt: skip
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    at = next(
        i for i, line in enumerate(lines) if line.startswith("FAIL") and "policy file" in line
    )
    assert "not valid TOML" in lines[at] and lines[at + 1].strip().startswith("fix:")
    assert lines[-1].endswith("fail") and not lines[-1].startswith("0 ok")


def test_a_missing_model_fails_with_the_pull_command(setup: Setup):
    status, checks = setup.doctor(model="qwen2.5-coder-0.5b")
    assert status == 1
    assert failed(checks) == ["decode", "model file"]
    assert "codeagent-lsp model pull qwen2.5-coder-0.5b" in checks["model file"]["message"]


def test_without_a_local_model_a_remote_engine_only_warns(setup: Setup, replica: LocalReplica):
    status, checks = setup.doctor(
        "--remote", replica.url, "--set", "engine.backend=remote", model="qwen2.5-coder-0.5b"
    )
    assert status == 0, failed(checks)
    assert (
        checks["model file"]["status"] == "warn"
        and "1 token per byte" in (checks["model file"]["message"])
    )
    assert checks["decode"]["status"] == "ok" and "not run" in checks["decode"]["message"]
    assert checks[f"replica {replica.url}"]["status"] == "ok"


def test_a_file_that_differs_from_its_registry_pin_fails(setup: Setup):
    data = bytearray(setup.model.read_bytes())
    data[-1] ^= 0xFF  # same size, same header: only the hash tells
    setup.model.write_bytes(bytes(data))
    status, checks = setup.doctor()
    assert status == 1
    assert "sha256" in failed(checks)
    assert f"the registry pins {setup.sha256}" in checks["sha256"]["message"]
    assert "model pull tiny" in checks["sha256"]["fix"]


def test_a_model_the_policy_does_not_pin_fails_and_is_not_loaded(setup: Setup):
    setup.write_policy(models="0" * 64)
    status, checks = setup.doctor()
    assert status == 1
    assert failed(checks) == ["decode", "sha256"]
    assert "not allowed by policy" in checks["sha256"]["message"]
    assert setup.sha256 in checks["sha256"]["fix"]
    assert "policy does not allow" in checks["decode"]["message"]


def test_a_broken_policy_fails_and_names_the_problem(setup: Setup):
    setup.policy.write_text('[roles.dev]\nfeatures = ["completion", "telepathy"]\n')
    status, checks = setup.doctor()
    assert status == 1
    assert "policy file" in failed(checks)
    assert "unknown feature(s) ['telepathy']" in checks["policy file"]["message"]
    assert str(setup.policy) in checks["policy file"]["fix"]


def test_an_audit_log_that_cannot_be_written_fails(setup: Setup):
    blocker = setup.base / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    setup.write_policy(audit=str(blocker / "audit.sqlite3"))
    status, checks = setup.doctor()
    assert status == 1
    assert failed(checks) == ["log"]
    assert f"{blocker} is not a folder" in checks["log"]["message"]


def test_a_tampered_audit_log_fails_verify(setup: Setup):
    setup.cli("complete", str(setup.root / "app.py") + ":1:1", "--model", str(setup.model))
    setup.cli("complete", str(setup.root / "app.py") + ":1:1", "--model", str(setup.model))
    _, checks = setup.doctor()
    assert checks["verify"]["status"] == "ok" and checks["verify"]["data"]["rows"] >= 2
    db = sqlite3.connect(setup.audit)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET user = 'someone-else' WHERE id = 1")
    db.commit()
    db.close()
    status, checks = setup.doctor()
    assert status == 1 and failed(checks) == ["verify"]
    assert checks["verify"]["message"].startswith("row 1:")


def test_a_replica_down_fails_as_unreachable(setup: Setup):
    url = f"http://127.0.0.1:{free_port()}"
    status, checks = setup.doctor("--remote", url)
    assert status == 1
    assert failed(checks) == [f"replica {url}"]
    assert checks[f"replica {url}"]["message"].startswith("unreachable")


def test_a_replica_that_refuses_the_token_fails(setup: Setup, replica: LocalReplica):
    setup.token.write_text("not-the-token")
    status, checks = setup.doctor("--remote", replica.url)
    assert status == 1
    check = checks[f"replica {replica.url}"]
    assert failed(checks) == [f"replica {replica.url}"]
    assert check["message"] == "the token was refused (HTTP 401)"
    assert check["data"]["steps"] == ["reachable", "plaintext"]


def test_a_replica_off_this_machine_that_the_policy_does_not_list_is_refused(setup: Setup):
    status, checks = setup.doctor("--remote", "https://inference.example:8443")
    assert status == 1
    assert "[network] inference" in checks["replica https://inference.example:8443"]["message"]


def test_a_worker_killed_by_sigill_reports_the_configuration_that_ran(setup: Setup):
    setup.env[faults.ENV] = "SIGILL@decode#repack"  # what an AMX VM does
    status, checks = setup.doctor()
    decode = checks["decode"]
    assert status == 0 and decode["status"] == "warn", [checks[n] for n in failed(checks)]
    assert "illegal instruction" in decode["message"] and "repack" in decode["message"]
    assert "codeagent.engine.repack = false" in decode["fix"]
    assert decode["data"]["worker"]["config"]["repack"] is False


def test_a_build_feature_this_cpu_lacks_is_a_fail():
    used, _ = build_cpu_features()
    flags = cpu_flags()
    assert used and flags is not None
    check = cpu_check(EngineSettings(), flags)
    assert check.status in ("ok", "warn") and not check.data["missing"]
    feature = used[-1]  # the build's most demanding feature, as a CPU without it would show
    check = cpu_check(EngineSettings(), flags - {CPUINFO_FLAGS[feature]})
    assert check.status == "fail" and feature in check.data["missing"]
    assert "SIGILL" in check.message and "GGML_NATIVE=OFF" in check.fix


def test_the_park_folder_must_be_private(tmp_path: Path) -> None:
    from codeagent_lsp.doctor.engine import park_check
    from codeagent_lsp.security.policy import CacheRules
    from codeagent_lsp.settings import EngineSettings

    folder = tmp_path / "kv"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    settings = EngineSettings(parkDir=str(folder))
    assert park_check(settings, CacheRules()).status == "fail"
    folder.chmod(0o700)
    assert park_check(settings, CacheRules()).status == "ok"
    off = park_check(settings, CacheRules(park_kv_slots=False))
    assert off.status == "ok" and "policy" in off.message
