"""Sanity limits on a GGUF file's metadata and tensor table, checked before llama.cpp reads it.

llama.cpp's loader trusts the counts and lengths it reads: a crafted header with a string of
2^60 bytes, an array of 2^40 elements or a model of a million blocks makes it allocate without
bound or read past the file, and a crash there takes the whole server down. This walks the
same structure (read through mmap, nothing is allocated from a length before it is checked)
and refuses what no real model has.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

MAX_KEY_BYTES = 1024
MAX_STRING_BYTES = 1 << 20
"""Chat templates, the longest real strings, are tens of KB."""
MAX_ARRAY_ITEMS = 1 << 22
"""Vocabularies and merge lists of real models are a few hundred thousand entries."""
MAX_BLOCKS = 1024
"""`<arch>.block_count`: the largest published models have under 200 layers."""
MAX_TENSOR_NAME = 64  # GGML_MAX_NAME
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_TYPE = 64
"""Above every ggml type id (about 40 today)."""

_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
"""GGUF value type -> size in bytes, for the fixed-size types."""
_STRING, _ARRAY = 8, 9
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_HEADER_BYTES = 24


class GgufLimitError(ValueError):
    """The file breaks a limit; the message says which."""


def check_limits(path: Path, tensor_count: int, kv_count: int) -> None:
    """Walk the metadata and tensor infos after the 24-byte header; raise GgufLimitError."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        reader = _Reader(data)
        for _ in range(kv_count):
            key = reader.string(MAX_KEY_BYTES, "metadata key")
            value_type = reader.u32()
            if key.endswith(b".block_count") and value_type in (4, 5, 10, 11):
                blocks = reader.u64() if value_type in (10, 11) else reader.u32()
                if blocks > MAX_BLOCKS:
                    raise GgufLimitError(f"{blocks} blocks (at most {MAX_BLOCKS})")
                continue
            reader.value(value_type, key)
        for _ in range(tensor_count):
            reader.tensor_info(len(data))


class _Reader:
    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.at = data, _HEADER_BYTES

    def take(self, size: int) -> int:
        start = self.at
        if start + size > len(self.data):
            raise GgufLimitError("the metadata runs past the end of the file (truncated)")
        self.at += size
        return start

    def u32(self) -> int:
        return _U32.unpack_from(self.data, self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack_from(self.data, self.take(8))[0]

    def string(self, limit: int, what: str) -> bytes:
        length = self.u64()
        if length > limit:
            raise GgufLimitError(f"a {what} of {length} bytes (at most {limit})")
        start = self.take(length)
        return self.data[start : start + length]

    def value(self, value_type: int, key: bytes) -> None:
        if value_type in _SCALARS:
            self.take(_SCALARS[value_type])
        elif value_type == _STRING:
            self.string(MAX_STRING_BYTES, f"string value of {key[:64]!r}")
        elif value_type == _ARRAY:
            self.array(key)
        else:
            raise GgufLimitError(f"unknown value type {value_type} for {key[:64]!r}")

    def array(self, key: bytes) -> None:
        item_type, count = self.u32(), self.u64()
        if count > MAX_ARRAY_ITEMS:
            raise GgufLimitError(
                f"an array of {count} items in {key[:64]!r} (at most {MAX_ARRAY_ITEMS})"
            )
        if item_type == _ARRAY:
            raise GgufLimitError(f"nested arrays in {key[:64]!r}")
        if item_type in _SCALARS:
            self.take(_SCALARS[item_type] * count)
            return
        for _ in range(count):
            self.value(item_type, key)

    def tensor_info(self, file_size: int) -> None:
        name = self.string(MAX_TENSOR_NAME, "tensor name")
        dims = self.u32()
        if not 1 <= dims <= MAX_DIMS:
            raise GgufLimitError(f"tensor {name!r} has {dims} dimensions (1 to {MAX_DIMS})")
        elements = 1
        for _ in range(dims):
            size = self.u64()
            if size == 0 or size > file_size * 8:  # no type packs more than 8 values a byte
                raise GgufLimitError(f"tensor {name!r} has a dimension of {size}")
            elements *= size
        if elements > file_size * 8:
            raise GgufLimitError(f"tensor {name!r} has {elements} elements, more than the file")
        tensor_type, offset = self.u32(), self.u64()
        if tensor_type >= MAX_TENSOR_TYPE:
            raise GgufLimitError(f"tensor {name!r} has an unknown type {tensor_type}")
        if offset >= file_size:
            raise GgufLimitError(f"tensor {name!r} starts past the end of the file")
