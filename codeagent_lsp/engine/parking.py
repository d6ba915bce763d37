"""Parked KV slots: an evicted (or closed, or shut-down) document's KV cache written to disk and
restored when the document comes back, so its next suggestion does not evaluate the whole
prompt again, even after a restart. llama-server's slot save/restore, made automatic.

One file per document, in a folder per fingerprint (the model's sha256 and the engine settings
that change the KV cache's bytes). A file holds a header (its fingerprint, the document's key
hash, the cached tokens and their hash, the payload's length and sha256) and the payload from
`llama_state_seq_get_data`. Files are written atomically (a temporary file, then rename) and
checked when read: a corrupt, truncated or foreign file is ignored and deleted. Parked KV holds
source code: the folder is private to its user (0700, files 0600). A size cap evicts the least
recently used files; an age cap (the policy's) drops old ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"CODEAGENT-KV\x01"
_LENGTH = struct.Struct(">I")
MIN_PARK_TOKENS = 32
"""Slots holding fewer tokens are not worth a file: evaluating them is as fast as reading it."""


def default_folder() -> Path:
    """`$XDG_CACHE_HOME/codeagent-lsp/kv`, else `~/.cache/codeagent-lsp/kv`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codeagent-lsp" / "kv"


def fingerprint(model_sha256: str, *parts: object) -> str:
    """What makes two KV caches interchangeable: the model and the settings named in `parts`."""
    text = json.dumps([model_sha256, *[str(p) for p in parts]])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


MIN_RATE_BATCH = 32
"""Prompt batches shorter than this say little of the evaluation speed (fixed costs dominate)."""
MIN_GAIN_S = 0.02
"""A parked slot is restored unless evaluating its prompt is expected to be at least this much
faster: smaller differences are within the noise of a busy machine."""


@dataclass
class Speeds:
    """What the engine measured of itself, for deciding whether a parked slot is worth
    restoring: on a GPU, evaluating a prompt again can beat reading and loading its KV cache
    (H200, 1.4k tokens: 172.9 ms first suggestion with the restore, 143.5 ms without). The best
    of each is kept: interruptions only ever make a measurement slower."""

    eval_tokens_s: float = 0.0
    """Prompt evaluation, tokens per second (batches of MIN_RATE_BATCH or more)."""
    restore_bytes_s: float = 0.0
    """Restoring a parked slot (reading its file and loading the state), bytes per second."""

    def note_eval(self, tokens: int, seconds: float) -> None:
        if tokens >= MIN_RATE_BATCH and seconds > 0:
            self.eval_tokens_s = max(self.eval_tokens_s, tokens / seconds)

    def note_restore(self, size: int, seconds: float) -> None:
        if seconds > 0:
            self.restore_bytes_s = max(self.restore_bytes_s, size / seconds)

    def restore_pays(self, tokens: int, size: int) -> bool:
        """Whether restoring a file of `size` bytes is expected to cost no more than MIN_GAIN_S
        over evaluating `tokens` prompt tokens (the whole prompt: the most a restore can save);
        True until both speeds are measured."""
        if not (self.eval_tokens_s and self.restore_bytes_s):
            return True
        return size / self.restore_bytes_s <= tokens / self.eval_tokens_s + MIN_GAIN_S


@dataclass(frozen=True)
class Parked:
    tokens: list[int]
    """Exactly the tokens the KV state holds, at positions 0..len-1."""
    state: bytes


class SlotPark:
    """The park folder for one fingerprint; not thread-safe (the engine thread owns it)."""

    def __init__(
        self, root: Path, fingerprint: str, *, max_bytes: int, max_age_s: float = 0.0
    ) -> None:
        self.root, self.fingerprint = root, fingerprint
        self.folder = root / fingerprint
        self.max_bytes, self.max_age_s = max_bytes, max_age_s
        _private_folder(root)
        _private_folder(self.folder)

    def park(self, key: str, tokens: list[int], state: bytes) -> None:
        """Write `key`'s KV state (replacing an older one), then keep the folder under its cap."""
        header = json.dumps(
            {
                "fingerprint": self.fingerprint,
                "key": _key_hash(key),
                "tokens": tokens,
                "tokensSha256": _tokens_hash(tokens),
                "length": len(state),
                "sha256": hashlib.sha256(state).hexdigest(),
            }
        ).encode()
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".parking-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(MAGIC + _LENGTH.pack(len(header)) + header + state)
            os.replace(temporary, self._file(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._prune()

    def size(self, key: str) -> int | None:
        """Bytes of `key`'s parked file, None when there is none (nothing read)."""
        try:
            return self._file(key).stat().st_size
        except FileNotFoundError:
            return None

    def take(self, key: str) -> Parked | None:
        """`key`'s parked KV state, when there is a sound one of this fingerprint."""
        path = self._file(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        parked = self._check(data, key)
        if parked is None:
            log.info("a parked KV file was corrupt or foreign; deleted")
            path.unlink(missing_ok=True)
            return None
        if self.max_age_s and time.time() - path.stat().st_mtime > self.max_age_s:
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: the size cap evicts others first
        return parked

    def _check(self, data: bytes, key: str) -> Parked | None:
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LENGTH.size:
            return None
        start = len(MAGIC) + _LENGTH.size
        (size,) = _LENGTH.unpack_from(data, len(MAGIC))
        try:
            header = json.loads(data[start : start + size])
            tokens = [int(t) for t in header["tokens"]]
            expected = (header["fingerprint"], header["key"], header["tokensSha256"])
        except (ValueError, KeyError, TypeError):
            return None
        state = data[start + size :]
        sound = (
            expected == (self.fingerprint, _key_hash(key), _tokens_hash(tokens))
            and header.get("length") == len(state)
            and header.get("sha256") == hashlib.sha256(state).hexdigest()
        )
        return Parked(tokens, state) if sound else None

    def _file(self, key: str) -> Path:
        return self.folder / f"{_key_hash(key)}.kv"

    def _prune(self) -> None:
        """Drop files past the age cap, then the least recently used past the size cap."""
        files = []
        for path in self.root.glob("*/*.kv"):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                files.append((st.st_mtime, st.st_size, path))
        files.sort()
        now, total = time.time(), sum(size for _, size, _ in files)
        for mtime, size, path in files:
            too_old = self.max_age_s and now - mtime > self.max_age_s
            if not too_old and total <= self.max_bytes:
                continue
            path.unlink(missing_ok=True)
            total -= size


def _private_folder(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask, and the folder may be older


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode(errors="surrogatepass")).hexdigest()[:32]


def _tokens_hash(tokens: list[int]) -> str:
    return hashlib.sha256(json.dumps(tokens).encode()).hexdigest()
