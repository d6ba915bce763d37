"""The tiny GGUF fixture loads and runs in llama.cpp like a (very dumb) Qwen2.5-Coder.

Everything goes through llama-cpp-python's low-level ctypes API, the same layer the engine uses.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.tiny_gguf import (
    CONTEXT_LENGTH,
    CONTROL_TOKENS,
    MODEL_NAME,
    N_EMBD,
    N_HEAD,
    N_HEAD_KV,
    N_LAYER,
    Shape,
    build_vocab,
    write_not_a_gguf,
    write_tiny_gguf,
)

llama_cpp = pytest.importorskip("llama_cpp")
lc = llama_cpp.llama_cpp  # the raw ctypes bindings, not the high-level Llama class

SOURCE = "def foo(x):\n    return x\n"


# ---------------------------------------------------------------- low-level helpers


def tokenize(vocab: int, text: str, *, parse_special: bool = False) -> list[int]:
    data = text.encode("utf-8")
    capacity = len(data) + 8  # byte-level BPE never yields more tokens than bytes
    buf = (lc.llama_token * capacity)()
    n = lc.llama_tokenize(vocab, data, len(data), buf, capacity, False, parse_special)
    if n < 0:  # -n is the size it needed
        buf = (lc.llama_token * -n)()
        n = lc.llama_tokenize(vocab, data, len(data), buf, -n, False, parse_special)
    assert n >= 0
    return list(buf[:n])


def piece(vocab: int, token: int, *, special: bool = False) -> bytes:
    buf = ctypes.create_string_buffer(64)
    n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]  # not NUL-terminated: .value would be wrong


def detokenize(vocab: int, tokens: list[int]) -> str:
    # Pieces are bytes: a multi-byte character may span tokens, so decode only at the end.
    return b"".join(piece(vocab, t) for t in tokens).decode("utf-8")


def decode(ctx: int, tokens: list[int], *, seq_id: int = 0, pos0: int = 0) -> np.ndarray:
    """Decode tokens into one sequence; return the logits after the last one."""
    batch = lc.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, tok in enumerate(tokens):
            batch.token[i] = tok
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        assert lc.llama_decode(ctx, batch) == 0
    finally:
        lc.llama_batch_free(batch)
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(lc.llama_get_model(ctx)))
    # -1 = the last token that asked for logits; copy, the buffer is reused by the next decode.
    return np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()


def greedy(ctx: int, prompt: list[int], n: int) -> list[int]:
    logits = decode(ctx, prompt)
    out: list[int] = []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = decode(ctx, [out[-1]], pos0=len(prompt) + len(out) - 1)
    return out


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> Iterator[int]:  # tiny_model: conftest, write_tiny_gguf()
    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.n_gpu_layers = 0  # keep the fixture CPU-only and identical on every machine
    m = lc.llama_model_load_from_file(str(tiny_model).encode(), params)
    assert m, "llama.cpp refused the tiny GGUF"
    yield m
    lc.llama_model_free(m)


@pytest.fixture(scope="module")
def vocab(model: int) -> int:
    return lc.llama_model_get_vocab(model)


@pytest.fixture
def ctx(model: int) -> Iterator[int]:
    params = lc.llama_context_default_params()
    params.n_ctx = 4096
    params.n_batch = 512
    params.n_seq_max = 4
    params.kv_unified = True  # the engine's layout: one KV buffer shared by the sequences
    # One thread: a 64-wide model gains nothing from more, and spinning workers stall on busy CI.
    params.n_threads = params.n_threads_batch = 1
    c = lc.llama_init_from_model(model, params)
    assert c
    yield c
    lc.llama_free(c)


# ---------------------------------------------------------------- tests


def test_write_is_fast_and_deterministic(tmp_path: Path) -> None:
    start = time.perf_counter()
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=1)
    elapsed = time.perf_counter() - start
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=1)
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=2)
    assert elapsed < 1.0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_hyperparameters(model: int) -> None:
    buf = ctypes.create_string_buffer(256)
    assert lc.llama_model_meta_val_str(model, b"general.architecture", buf, len(buf)) > 0
    assert buf.value == b"qwen2"
    assert lc.llama_model_meta_val_str(model, b"general.name", buf, len(buf)) > 0
    assert buf.value == MODEL_NAME.encode()
    assert lc.llama_model_n_ctx_train(model) == CONTEXT_LENGTH
    assert lc.llama_model_n_embd(model) == N_EMBD
    assert lc.llama_model_n_layer(model) == N_LAYER
    assert lc.llama_model_n_head(model) == N_HEAD
    assert lc.llama_model_n_head_kv(model) == N_HEAD_KV


def test_tokenize_round_trip(vocab: int) -> None:
    tokens = tokenize(vocab, SOURCE)
    assert detokenize(vocab, tokens) == SOURCE
    # The merges are actually used: far fewer tokens than bytes, "def" and " return" whole.
    assert len(tokens) < len(SOURCE) // 2
    assert build_vocab().id_of("def") in tokens
    assert build_vocab().id_of("Ġreturn") in tokens


def test_tokenize_round_trip_non_ascii(vocab: int) -> None:
    text = "s = 'héllo wörld ✓'\n\ttab\r\n"
    assert detokenize(vocab, tokenize(vocab, text)) == text


def test_control_tokens(vocab: int) -> None:
    ids = build_vocab().control_ids
    assert lc.llama_vocab_n_tokens(vocab) == len(build_vocab().tokens)
    for text, tid in ids.items():
        assert tokenize(vocab, text, parse_special=True) == [tid]
        assert lc.llama_vocab_get_attr(vocab, tid) & lc.LLAMA_TOKEN_ATTR_CONTROL
        assert piece(vocab, tid, special=True) == text.encode()
        assert piece(vocab, tid, special=False) == b""  # hidden unless asked for
    # Without parse_special the text is ordinary bytes: user code can't inject control tokens.
    assert ids["<|fim_prefix|>"] not in tokenize(vocab, "<|fim_prefix|>")


def test_fim_and_special_ids(vocab: int) -> None:
    ids = build_vocab().control_ids
    assert lc.llama_vocab_fim_pre(vocab) == ids["<|fim_prefix|>"]
    assert lc.llama_vocab_fim_suf(vocab) == ids["<|fim_suffix|>"]
    assert lc.llama_vocab_fim_mid(vocab) == ids["<|fim_middle|>"]
    assert lc.llama_vocab_fim_pad(vocab) == ids["<|fim_pad|>"]
    assert lc.llama_vocab_fim_rep(vocab) == ids["<|repo_name|>"]
    assert lc.llama_vocab_fim_sep(vocab) == ids["<|file_sep|>"]
    assert lc.llama_vocab_eos(vocab) == ids["<|endoftext|>"]
    assert not lc.llama_vocab_get_add_bos(vocab)
    for eog in ("<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"):
        assert lc.llama_vocab_is_eog(vocab, ids[eog])


def test_decode_fim_prompt(ctx: int, vocab: int) -> None:
    prompt = tokenize(
        vocab, "<|fim_prefix|>def foo(x):\n    <|fim_suffix|>\n<|fim_middle|>", parse_special=True
    )
    logits = decode(ctx, prompt)
    assert logits.shape == (len(build_vocab().tokens),)
    assert np.isfinite(logits).all()
    assert logits.max() > 0


def test_decode_two_sequences(ctx: int, vocab: int) -> None:
    # Same prompt in two sequences of the unified KV cache: same logits (positions restart at 0).
    tokens = tokenize(vocab, SOURCE)
    first = decode(ctx, tokens, seq_id=0)
    second = decode(ctx, tokens, seq_id=1)
    np.testing.assert_allclose(first, second, rtol=1e-4, atol=1e-4)


def test_greedy_output_is_printable_identifier_noise(ctx: int, vocab: int) -> None:
    out = greedy(ctx, tokenize(vocab, SOURCE), 10)
    assert not any(lc.llama_vocab_is_eog(vocab, t) for t in out)
    text = detokenize(vocab, out)
    assert text.isprintable() and text.isascii()
    assert all(c.isalnum() or c == "_" for c in text), text


def test_not_a_gguf_fails_to_load(tmp_path: Path) -> None:
    lc.llama_backend_init()
    path = write_not_a_gguf(tmp_path / "broken.gguf")
    params = lc.llama_model_default_params()
    assert not lc.llama_model_load_from_file(str(path).encode(), params)  # NULL -> None


def test_padded_vocabulary_keeps_the_tokenizer(tmp_path: Path, vocab: int) -> None:
    """A model padded to a real vocabulary size (for speed measurements) tokenizes like the tiny
    one: unused tokens fill the gap, the control tokens stay last, matrices are F16 on request."""
    shape = Shape(n_embd=32, n_head=2, n_head_kv=1, n_ff=64, n_vocab=4096)
    path = write_tiny_gguf(tmp_path / "padded.gguf", shape=shape, f16=True)
    params = lc.llama_model_default_params()
    params.vocab_only = True
    padded = lc.llama_model_load_from_file(str(path).encode(), params)
    assert padded
    try:
        big = lc.llama_model_get_vocab(padded)
        assert lc.llama_vocab_n_tokens(big) == 4096
        assert tokenize(big, SOURCE) == tokenize(vocab, SOURCE)
        ids = build_vocab(4096).control_ids
        assert sorted(ids.values()) == list(range(4096 - len(CONTROL_TOKENS), 4096))
        assert lc.llama_vocab_fim_pre(big) == ids["<|fim_prefix|>"]
        unused = ids["<|endoftext|>"] - 1
        assert lc.llama_vocab_get_attr(big, unused) & lc.LLAMA_TOKEN_ATTR_UNUSED
    finally:
        lc.llama_model_free(padded)
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    with pytest.raises(ValueError, match="n_vocab 100"):
        build_vocab(100)
