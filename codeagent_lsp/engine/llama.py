"""A thin, typed wrapper over llama.cpp's C API (llama-cpp-python's low-level module).

The high-level `llama_cpp.Llama` holds one sequence only; a KV cache per document needs
sequences, so this module talks to the C API directly. Not thread-safe: one engine thread owns it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import mmap
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import llama_cpp.llama_cpp as C

from codeagent_lsp.settings import EngineSettings

log = logging.getLogger(__name__)

_FLASH_ATTENTION = {"auto": -1, "off": 0, "on": 1}
# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation. Its load-time warnings
# (odd tokenizer entries of published models) would show on every start: they become INFO.
_LLAMA_LOG_LEVELS = {2: logging.DEBUG, 3: logging.INFO, 4: logging.ERROR}


class EngineError(Exception):
    """A model that cannot be loaded or run; the message is for the user."""


class Aborted(Exception):
    """Prompt evaluation or generation was cancelled; what was decoded stays cached."""


class NoKvSpace(Exception):
    """The shared KV cache is full: evict another slot and retry."""


@dataclass(frozen=True)
class ModelInfo:
    path: str
    description: str
    n_ctx_train: int
    n_params: int
    device: str
    name: str


@C.llama_log_callback
def _llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    # llama.cpp logs to stderr by default; route it through logging so --log-file and levels apply.
    message = text.decode(errors="replace").rstrip()
    level = _LLAMA_LOG_LEVELS.get(level, logging.DEBUG)
    if _decoding is not None and _decoding.is_set():
        # An abort makes llama.cpp log "failed to compute graph" errors: expected, not a fault.
        level = logging.DEBUG
    log.log(level, "%s", message)


# The abort flag of the decode in progress (a process decodes on one thread at a time).
_decoding: AbortFlag | None = None


_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        C.llama_log_set(_llama_log, ctypes.c_void_p())
        C.llama_backend_init()
        _backend_ready = True


class AbortFlag:
    """Cancellation flag that llama.cpp polls between graph nodes without taking the GIL.

    A Python abort callback would take the GIL once per graph node (hundreds per decode) and
    wait up to the interpreter's switch interval whenever the event loop holds it. libc's
    `strlen` on a one-byte buffer is a C function with the callback's shape that returns
    non-zero exactly when the flag is set.
    """

    def __init__(self, shared: mmap.mmap | None = None) -> None:
        """`shared`: a page another process writes too (`protocol.SharedFlags`); its first two
        bytes are the flag and its NUL."""
        self._buffer = (ctypes.c_char * 2).from_buffer(shared) if shared else (ctypes.c_char * 2)()
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        self.callback = ctypes.cast(libc.strlen, C.ggml_abort_callback)
        self.data = ctypes.cast(self._buffer, ctypes.c_void_p)

    def set(self, value: bool) -> None:
        self._buffer[0] = b"x" if value else b"\0"

    def is_set(self) -> bool:
        return self._buffer[0] != b"\0"


class Vocabulary:
    """Tokenization over a loaded model's vocabulary (read-only: safe from any thread)."""

    vocab: ctypes.c_void_p

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        data = text.encode()
        capacity = len(data) + 8
        out = (C.llama_token * capacity)()
        n = C.llama_tokenize(self.vocab, data, len(data), out, capacity, False, special)
        if n < 0:  # buffer too small: -n is the size needed
            out = (C.llama_token * -n)()
            n = C.llama_tokenize(self.vocab, data, len(data), out, -n, False, special)
        return list(out[:n])

    def token_id(self, text: str) -> int | None:
        """The id of a control token named by its text, None when the vocabulary lacks it."""
        ids = self.tokenize(text, special=True)
        if len(ids) == 1 and C.llama_vocab_get_attr(self.vocab, ids[0]) & _SPECIAL_ATTRS:
            return ids[0]
        return None


_READ_VOCABULARY = (
    "import sys, llama_cpp.llama_cpp as C\n"
    "C.llama_backend_init()\n"
    "params = C.llama_model_default_params()\n"
    "params.vocab_only = True\n"
    "sys.exit(0 if C.llama_model_load_from_file(sys.argv[1].encode(), params) else 3)\n"
)


def vocabulary_read_in_a_child(path: Path) -> VocabularyOnly:
    """The vocabulary of `path` for this process, once a child process has read it: llama.cpp's
    loader ends the process that reads a malformed vocabulary (GGML_ASSERT aborts), which
    must be a throwaway child, not the language server. Raises EngineError."""
    try:
        child = subprocess.run(
            [sys.executable, "-c", _READ_VOCABULARY, str(path)], capture_output=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"llama.cpp could not read the vocabulary of {path} in 120 s") from None
    if child.returncode != 0:
        raise EngineError(
            f"llama.cpp could not read the vocabulary of {path} (its reader ended with status "
            f"{child.returncode}: the file is damaged or not a model llama.cpp knows)"
        )
    return VocabularyOnly(path)


class VocabularyOnly(Vocabulary):
    """A GGUF's vocabulary without its weights (milliseconds, a few MB): token counts for a
    model that runs elsewhere. Thread-safe, close() included: requests tokenize on their own
    threads while settings change or a client leaves, and llama.cpp reading a freed vocabulary
    would kill the language server."""

    def __init__(self, path: Path) -> None:
        _init_backend()
        params = C.llama_model_default_params()
        params.vocab_only = True
        self.model = C.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise EngineError(f"llama.cpp could not read the vocabulary of {path}")
        self.vocab = C.llama_model_get_vocab(self.model)
        self._users = 0
        self._closed = False
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[None]:
        # Readers count themselves (tokenizing stays parallel); close() waits for none left.
        with self._idle:
            if self._closed:
                raise EngineError("the engine was closed")
            self._users += 1
        try:
            yield
        finally:
            with self._idle:
                self._users -= 1
                self._idle.notify_all()

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Raises EngineError once closed."""
        with self._in_use():
            return super().tokenize(text, special=special)

    def token_id(self, text: str) -> int | None:
        """Raises EngineError once closed."""
        with self._in_use():
            return super().token_id(text)

    def close(self) -> None:
        """Frees the vocabulary once no thread uses it; later calls raise EngineError."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            self._idle.wait_for(lambda: self._users == 0)
        C.llama_model_free(self.model)


class LlamaRuntime(Vocabulary):
    """One model and one context with `n_seqs` sequences over a unified KV cache."""

    def __init__(
        self, path: Path, settings: EngineSettings, n_seqs: int, abort: AbortFlag | None = None
    ) -> None:
        _init_backend()
        self.settings = settings
        self.abort = abort or AbortFlag()
        self.model = self._load_model(path, settings)
        self.vocab = C.llama_model_get_vocab(self.model)
        self.ctx = self._new_context(settings, n_seqs)
        self.memory = C.llama_get_memory(self.ctx)
        self.n_ctx = C.llama_n_ctx(self.ctx)
        # llama.cpp clamps the batch to the requested context size (contextSize 300 with
        # batchSize 512 gives 300); a larger llama_decode fails a GGML_ASSERT and kills the process.
        self.n_batch = min(C.llama_n_batch(self.ctx), C.llama_n_ubatch(self.ctx))
        self._batch = C.llama_batch_init(self.n_batch, 0, 1)
        self.info = self._describe(path)

    @staticmethod
    def _load_model(path: Path, settings: EngineSettings) -> ctypes.c_void_p:
        params = C.llama_model_default_params()
        params.n_gpu_layers = settings.nGpuLayers if C.llama_supports_gpu_offload() else 0
        params.use_mmap = True
        # Weight repacking ("extra buffer types"; llama-server --no-repack turns it off) runs
        # CPU kernels picked from CPUID, which some VMs misreport (AMX): SIGILL at first decode.
        params.use_extra_bufts = settings.repack
        model = C.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise EngineError(f"llama.cpp could not load {path} (see the log for its reason)")
        return model

    def _new_context(self, settings: EngineSettings, n_seqs: int) -> ctypes.c_void_p:
        params = C.llama_context_default_params()
        threads = settings.threads or os.cpu_count() or 1
        params.n_ctx = settings.contextSize
        params.n_batch = settings.batchSize
        params.n_ubatch = settings.batchSize
        params.n_seq_max = n_seqs
        params.kv_unified = True
        params.n_threads = threads
        params.n_threads_batch = threads
        params.flash_attn_type = _FLASH_ATTENTION[settings.flashAttention]
        params.abort_callback = self.abort.callback
        params.abort_callback_data = self.abort.data
        params.no_perf = True
        ctx = C.llama_init_from_model(self.model, params)
        if not ctx:
            C.llama_model_free(self.model)
            raise EngineError("llama.cpp could not create a context (out of memory?)")
        return ctx

    def _describe(self, path: Path) -> ModelInfo:
        buf = ctypes.create_string_buffer(256)
        C.llama_model_desc(self.model, buf, len(buf))
        offload = C.llama_supports_gpu_offload() and self.settings.nGpuLayers != 0
        threads = self.settings.threads or os.cpu_count()
        return ModelInfo(
            path=str(path),
            description=buf.value.decode(errors="replace"),
            n_ctx_train=C.llama_model_n_ctx_train(self.model),
            n_params=C.llama_model_n_params(self.model),
            device="gpu" if offload else f"cpu ({threads} threads)",
            name=self.meta("general.name") or path.stem,
        )

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(512)
        n = C.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode(errors="replace") if n >= 0 else None

    def close(self) -> None:
        C.llama_batch_free(self._batch)
        C.llama_free(self.ctx)
        C.llama_model_free(self.model)

    # --- tokens -------------------------------------------------------------------------------

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(C.llama_vocab_is_eog(self.vocab, token))

    # --- KV cache -----------------------------------------------------------------------------

    def decode(self, tokens: list[int], seq: int, start: int) -> None:
        """Evaluate `tokens` at positions start.. of `seq`; logits only for the last one."""
        for offset in range(0, len(tokens), self.n_batch):
            chunk = tokens[offset : offset + self.n_batch]
            last_chunk = offset + self.n_batch >= len(tokens)
            self._fill_batch(chunk, seq, start + offset, logits_last=last_chunk)
            self._decode_batch()

    def _fill_batch(self, tokens: list[int], seq: int, start: int, *, logits_last: bool) -> None:
        batch = self._batch
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = False
        batch.logits[len(tokens) - 1] = logits_last
        batch.n_tokens = len(tokens)

    def _decode_batch(self) -> None:
        global _decoding
        if self.abort.is_set():
            raise Aborted
        _decoding = self.abort
        try:
            status = C.llama_decode(self.ctx, self._batch)
        finally:
            _decoding = None
        if status == 0:
            return
        if status == 1:
            raise NoKvSpace
        if self.abort.is_set():  # llama.cpp reports an abort as 2, or as a failed compute
            raise Aborted
        raise EngineError(f"llama_decode failed with status {status}")

    def cached_length(self, seq: int) -> int:
        """Tokens held for `seq`; positions are always 0..n-1 in this engine."""
        return C.llama_memory_seq_pos_max(self.memory, seq) + 1

    def seq_rm(self, seq: int, start: int, end: int = -1) -> None:
        C.llama_memory_seq_rm(self.memory, seq, start, end)

    def seq_cp(self, src: int, dst: int, start: int, end: int) -> None:
        C.llama_memory_seq_cp(self.memory, src, dst, start, end)

    def seq_shift(self, seq: int, start: int, end: int, delta: int) -> None:
        C.llama_memory_seq_add(self.memory, seq, start, end, delta)

    def can_shift(self) -> bool:
        return bool(C.llama_memory_can_shift(self.memory))

    def seq_state(self, seq: int) -> bytes:
        """One sequence's KV cache as bytes (`llama_state_seq_get_data`), to park it."""
        size = C.llama_state_seq_get_size(self.ctx, seq)
        buffer = (ctypes.c_uint8 * size)()
        written = C.llama_state_seq_get_data(self.ctx, buffer, size, seq)
        return bytes(buffer[:written])

    def set_seq_state(self, seq: int, state: bytes) -> bool:
        """Load a parked KV cache into `seq` (emptied first); False when llama.cpp refuses it
        (no room in the KV cache, or state of another layout)."""
        self.seq_rm(seq, 0)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if C.llama_state_seq_set_data(self.ctx, buffer, len(state), seq) == 0:
            self.seq_rm(seq, 0)
            return False
        return True


_SPECIAL_ATTRS = C.LLAMA_TOKEN_ATTR_CONTROL | C.LLAMA_TOKEN_ATTR_USER_DEFINED


class Sampler:
    """Greedy at temperature 0, else top-k/top-p/temperature with a fixed seed."""

    def __init__(self, temperature: float, seed: int = 1234) -> None:
        self.chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        if temperature <= 0:
            C.llama_sampler_chain_add(self.chain, C.llama_sampler_init_greedy())
        else:
            C.llama_sampler_chain_add(self.chain, C.llama_sampler_init_top_k(40))
            C.llama_sampler_chain_add(self.chain, C.llama_sampler_init_top_p(0.95, 1))
            C.llama_sampler_chain_add(self.chain, C.llama_sampler_init_temp(temperature))
            C.llama_sampler_chain_add(self.chain, C.llama_sampler_init_dist(seed))

    def sample(self, runtime: LlamaRuntime) -> int:
        return C.llama_sampler_sample(self.chain, runtime.ctx, -1)

    def close(self) -> None:
        C.llama_sampler_free(self.chain)
