"""A tiny but real Qwen2 GGUF for fast plumbing tests.

The real Qwen2.5-Coder-0.5B is ~400 MB and slow on CI CPUs. Tests of the engine's plumbing (KV
cache per document, FIM prompt layout, cancellation, streaming) only need a model that llama.cpp
loads and decodes exactly like the real one: same architecture (`qwen2`), same tokenizer family
(byte-level BPE with the `qwen2` pre-tokenizer) and the same control tokens. Weights are noise.

This module must stay importable without llama_cpp (it only needs `gguf` and numpy), so test
collection works before llama-cpp-python is built.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

ARCH = "qwen2"
MODEL_NAME = "tiny-qwen2.5-coder"
CONTEXT_LENGTH = 32768
N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
ROPE_FREQ_BASE = 1e6
RMS_EPS = 1e-6
N_MERGES = 320

# Same relative order as Qwen2.5-Coder (151643 = <|endoftext|>, 151644 = <|im_start|>, ...), so
# any code that (wrongly) hard-codes an order sees the same one here.
CONTROL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
EOS_TOKEN = "<|endoftext|>"


@dataclass(frozen=True)
class Shape:
    """Sizes of a qwen2 model. Tests use TINY; larger shapes serve speed measurements (same
    compute as a real model of those sizes, noise weights)."""

    n_layer: int = N_LAYER
    n_embd: int = N_EMBD
    n_head: int = N_HEAD
    n_head_kv: int = N_HEAD_KV
    n_ff: int = N_FF
    n_vocab: int = 0
    """Tokens, padded with unused ones before the control tokens; 0 = the learned ones alone."""
    name: str = MODEL_NAME


TINY = Shape()
QWEN25_CODER_0_5B = Shape(
    n_layer=24, n_embd=896, n_head=14, n_head_kv=2, n_ff=4864, n_vocab=151936, name="qwen0.5b-noise"
)
"""Qwen2.5-Coder-0.5B's sizes (its config.json): 494M parameters with a separate LM head."""

# The BPE merges are learned from this text at write time. Code-shaped on purpose, so tokens like
# "def", "return", "self" and runs of spaces exist, as they do in the real vocabulary.
_CORPUS = """\
import os
import sys
from typing import Any, Optional


class Node:
    def __init__(self, name: str, value: int = 0) -> None:
        self.name = name
        self.value = value
        self.children = []

    def add(self, child):
        self.children.append(child)
        return child

    def find(self, name):
        if self.name == name:
            return self
        for child in self.children:
            found = child.find(name)
            if found is not None:
                return found
        return None

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.value})"


def read_file(path: str) -> str:
    with open(path, "r", encoding="utf-8") as handle:
        return handle.read()


def write_file(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def parse_args(argv: list[str]) -> dict[str, Any]:
    result = {}
    for index, arg in enumerate(argv):
        if arg.startswith("--"):
            key = arg[2:]
            result[key] = argv[index + 1] if index + 1 < len(argv) else True
        elif arg.startswith("-"):
            result[arg[1:]] = True
    return result


def fibonacci(n: int) -> int:
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


def main() -> int:
    args = parse_args(sys.argv[1:])
    path = args.get("path", os.getcwd())
    for name in os.listdir(path):
        if not name.startswith("."):
            print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

function add(a, b) {
    return a + b;
}

const items = [1, 2, 3].map((x) => x * 2);
for (let i = 0; i < items.length; i++) {
    console.log(items[i]);
}
"""

# Mirror of the `qwen2` pre-tokenizer regex llama.cpp uses, restricted to ASCII (the corpus is
# ASCII): training on the same word split makes the learned merges reachable at tokenize time.
_PRETOKENIZE = re.compile(
    r"'(?:[sStTmMdD]|[rR][eE]|[vV][eE]|[lL][lL])"
    r"|[^\r\nA-Za-z0-9]?[A-Za-z]+"
    r"|[0-9]"
    r"| ?[^\sA-Za-z0-9]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

_IDENTIFIER = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class TinyVocab:
    """Token strings (GPT-2 byte-to-unicode form), their GGUF token types and the merge list."""

    tokens: tuple[str, ...]
    types: tuple[int, ...]
    merges: tuple[str, ...]

    def id_of(self, token: str) -> int:
        return self.tokens.index(token)

    @property
    def control_ids(self) -> dict[str, int]:
        return {t: self.id_of(t) for t in CONTROL_TOKENS}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (space -> 'Ġ', newline -> 'Ċ')."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    # Insertion order (printable bytes first) is GPT-2's token-id order for the byte tokens.
    return mapping


def _corpus_words() -> Counter[tuple[str, ...]]:
    byte_map = bytes_to_unicode()
    words: Counter[tuple[str, ...]] = Counter()
    for piece in _PRETOKENIZE.findall(_CORPUS):
        words[tuple(byte_map[b] for b in piece.encode("utf-8"))] += 1
    return words


def _merge_word(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _best_pair(words: Counter[tuple[str, ...]]) -> tuple[tuple[str, str], int]:
    pairs: Counter[tuple[str, str]] = Counter()
    for word, freq in words.items():
        for pair in itertools.pairwise(word):
            pairs[pair] += freq
    if not pairs:
        return ("", ""), 0
    # Ties broken by the pair itself, so the vocabulary never depends on dict ordering.
    return max(pairs.items(), key=lambda kv: (kv[1], kv[0]))


def _learn_merges(n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training: every merge joins two existing tokens, so the list is consistent."""
    words = _corpus_words()
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pair, count = _best_pair(words)
        if count == 0:  # every corpus word is a single token already
            break
        merges.append(pair)
        words = Counter({_merge_word(w, pair): f for w, f in words.items()})
    return merges


@functools.cache
def build_vocab(n_vocab: int = 0) -> TinyVocab:
    """Byte tokens, then merged tokens in merge order, then `n_vocab` minus all of those unused
    tokens, then the control tokens (like Qwen). Raises ValueError when n_vocab is too small."""
    byte_tokens = list(bytes_to_unicode().values())
    merges = _learn_merges(N_MERGES)
    # Two merges can spell the same token ("ab c", "a bc"); llama.cpp asserts tokens are unique.
    merged = [t for t in dict.fromkeys(a + b for a, b in merges) if t not in byte_tokens]
    learned = len(byte_tokens) + len(merged) + len(CONTROL_TOKENS)
    if n_vocab and n_vocab < learned:
        raise ValueError(f"n_vocab {n_vocab} is below the {learned} tokens the vocabulary needs")
    unused = [f"<|unused_{i}|>" for i in range(max(0, n_vocab - learned))]
    tokens = [*byte_tokens, *merged, *unused, *CONTROL_TOKENS]
    normal, control = int(gguf.TokenType.NORMAL), int(gguf.TokenType.CONTROL)
    types = (
        [normal] * (len(byte_tokens) + len(merged))
        + [int(gguf.TokenType.UNUSED)] * len(unused)
        + [control] * len(CONTROL_TOKENS)
    )
    return TinyVocab(tuple(tokens), tuple(types), tuple(f"{a} {b}" for a, b in merges))


def _is_identifier_token(token: str, vocab: TinyVocab, index: int) -> bool:
    return vocab.types[index] == int(gguf.TokenType.NORMAL) and bool(_IDENTIFIER.fullmatch(token))


def _output_weight(rng: np.random.Generator, vocab: TinyVocab, n_embd: int) -> np.ndarray:
    """LM head whose rows are zero except for identifier-like tokens.

    Zero rows give logit 0 while the max over ~180 random logits is almost surely positive, so
    greedy decoding picks printable identifier tokens and never newline, space or EOS: plumbing
    tests get readable output and always run to their token limit.
    """
    weight = rng.normal(0.0, 1.0, (len(vocab.tokens), n_embd)).astype(np.float32)
    keep = np.array([_is_identifier_token(t, vocab, i) for i, t in enumerate(vocab.tokens)])
    weight[~keep] = 0.0
    return weight


def _tensors(seed: int, vocab: TinyVocab, shape: Shape) -> dict[str, np.ndarray]:
    """All tensors the qwen2 loader wants, numpy shape = reversed ggml shape (out, in)."""
    rng = np.random.default_rng(seed)
    embd, ff = shape.n_embd, shape.n_ff
    n_kv = embd // shape.n_head * shape.n_head_kv

    def rand(*dims: int) -> np.ndarray:
        # 1/sqrt(fan_in) keeps activations O(1) through the layers.
        return (rng.standard_normal(dims) / np.sqrt(dims[-1])).astype(np.float32)

    ones = np.ones(embd, dtype=np.float32)
    tensors = {"token_embd.weight": rand(len(vocab.tokens), embd)}
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        tensors |= {
            p + "attn_norm.weight": ones,
            p + "attn_q.weight": rand(embd, embd),
            p + "attn_q.bias": rand(embd),
            p + "attn_k.weight": rand(n_kv, embd),
            p + "attn_k.bias": rand(n_kv),
            p + "attn_v.weight": rand(n_kv, embd),
            p + "attn_v.bias": rand(n_kv),
            p + "attn_output.weight": rand(embd, embd),
            p + "ffn_norm.weight": ones,
            p + "ffn_gate.weight": rand(ff, embd),
            p + "ffn_up.weight": rand(ff, embd),
            p + "ffn_down.weight": rand(embd, ff),
        }
    tensors["output_norm.weight"] = ones
    tensors["output.weight"] = _output_weight(rng, vocab, embd)
    return tensors


def _add_hparams(writer: gguf.GGUFWriter, shape: Shape, f16: bool) -> None:
    writer.add_name(shape.name)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(int(file_type))
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)


def _add_tokenizer(writer: gguf.GGUFWriter, vocab: TinyVocab) -> None:
    eos = vocab.id_of(EOS_TOKEN)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_types(list(vocab.types))
    writer.add_token_merges(list(vocab.merges))
    # As in the base Qwen2.5-Coder GGUFs: bos/eos/pad all <|endoftext|>, no BOS prepended (the
    # instruct ones say eos = <|im_end|>; both are EOG either way). FIM ids are not written:
    # llama.cpp finds them by name, as it does for the real files.
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    writer.add_pad_token_id(eos)
    writer.add_add_bos_token(False)


def write_tiny_gguf(path: Path, *, seed: int = 0, shape: Shape = TINY, f16: bool = False) -> Path:
    """Write a qwen2 model of `shape` (the tiny one by default) to `path`, deterministic for a
    given seed, and return `path`. f16: matrices in F16 (as converted checkpoints are), else
    everything F32."""
    path = Path(path)
    vocab = build_vocab(shape.n_vocab)
    writer = gguf.GGUFWriter(path, ARCH)
    _add_hparams(writer, shape, f16)
    _add_tokenizer(writer, vocab)
    for name, tensor in _tensors(seed, vocab, shape).items():
        writer.add_tensor(name, tensor.astype(np.float16) if f16 and tensor.ndim == 2 else tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_not_a_gguf(path: Path) -> Path:
    """Write a file that is plainly not GGUF (wrong magic), for model-load error tests."""
    path = Path(path)
    path.write_bytes(b"this is not a GGUF model, just some text\n" * 64)
    return path
