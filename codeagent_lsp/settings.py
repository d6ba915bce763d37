"""One typed settings tree for the whole server.

Layers, lowest first: defaults < initializationOptions < `workspace/configuration` (section
`codeagent`) < `workspace/didChangeConfiguration`. Keys are camelCase as editors write them. A bad
value never crashes the server: it is reported and the default (or previous layer) is kept.

Written by hand over dataclasses rather than with pydantic: the tree is small, and this keeps
error messages in the editor's own terms ("codeagent.completion.maxTokens: expected an integer").
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import types
import typing
from dataclasses import dataclass, field
from math import isfinite
from typing import Any, Literal

SECTION = "codeagent"


@dataclass(frozen=True)
class EngineSettings:
    nGpuLayers: int = -1
    """Layers offloaded to the GPU; -1 = all when the build supports offload, ignored on CPU."""
    threads: int = 0
    """CPU threads for generation and prompt evaluation; 0 = the number of cores."""
    contextSize: int = 8192
    """Tokens of KV cache shared by all slots (llama.cpp unified KV cache)."""
    slots: int = 4
    """Open documents that keep a KV cache; the least recently used one is evicted."""
    batchSize: int = 512
    """Tokens per llama_decode call while evaluating a prompt (cancellation is checked between)."""
    flashAttention: Literal["auto", "on", "off"] = "auto"
    """Flash attention in llama.cpp; auto lets llama.cpp decide per device."""
    cacheShift: bool = True
    """Reuse the cached suffix after an edit in the prefix by shifting its positions
    (llama_memory_seq_add) instead of evaluating it again."""
    repack: bool = True
    """Repack weights for the CPU's fastest kernels (llama.cpp's extra buffer types; off is
    llama-server's --no-repack). Turned off by itself when the worker crashes at first decode."""
    memoryLimitMB: int = 0
    """Cap on the model worker's private memory (RLIMIT_DATA, MiB; the mapped model file is not
    counted); 0 = no cap. The worker needs about 150 MiB of its own (Python, llama.cpp) before
    the context and KV cache. Past the cap an allocation fails, the worker stops or is
    restarted, and the message names the cap."""
    parkSlots: bool = True
    """Write an evicted, closed or shut-down document's KV cache to disk (parkDir) and restore
    it when the document comes back, also after a restart; the policy can turn this off."""
    parkDir: str = ""
    """Folder of parked KV caches (private to the user, 0700); empty =
    $XDG_CACHE_HOME/codeagent-lsp/kv."""
    parkMaxMB: int = 2048
    """Size cap of parkDir in MiB; the least recently used files go first."""
    parkMaxAgeHours: float = 0.0
    """Parked KV caches older than this are dropped; 0 = no age cap (the policy may set one)."""
    backend: Literal["embedded", "remote"] = "embedded"
    """embedded: run the model in a supervised worker process on this machine; remote: send
    requests to the inference replicas of codeagent.remote (llama-server, vLLM or any
    OpenAI-compatible service)."""


@dataclass(frozen=True)
class RemoteSettings:
    urls: tuple[str, ...] = ()
    """Base URLs of the inference replicas (http:// or https://), the only hosts contacted;
    each document sticks to one replica (consistent hashing)."""
    protocol: Literal["openai", "infill"] = "openai"
    """openai: /v1/completions with this project's FIM prompt (vLLM, Ray Serve, llama-server);
    infill: llama-server's /infill, repository context as input_extra, one server slot per
    document. Code actions use /v1/chat/completions either way."""
    model: str = ""
    """Model name sent with each request (vLLM's --served-model-name); empty = not sent."""
    tokenizer: str = ""
    """A GGUF (path or registry name) whose vocabulary counts tokens for the budgets and picks
    the FIM template; empty = the file codeagent.model names when present, else a conservative
    one token per UTF-8 byte."""
    slots: int = 4
    """Server slots per llama-server replica (its --parallel); with the infill protocol each
    document is pinned to one (id_slot), the least recently used slot is reassigned."""
    connectTimeout: float = 2.0
    """Seconds to open a connection to a replica before trying the next one."""
    readTimeout: float = 30.0
    """Seconds without a byte from a replica before the request goes to the next one."""
    caBundle: str = ""
    """PEM file of the authorities that sign the replicas' TLS certificates; empty = the
    system's store."""
    retrySeconds: float = 2.0
    """Wait before a failed replica is tried again; doubles with each further failure."""
    maxRetrySeconds: float = 60.0
    """Longest wait before a failed replica is tried again."""


@dataclass(frozen=True)
class CompletionSettings:
    enabled: bool = True
    """Answer inline and classic completion requests."""
    maxTokens: int = 48
    """Most tokens generated per suggestion."""
    temperature: float = 0.0
    """0 = greedy, deterministic suggestions."""
    prefixTokens: int = 1536
    """Token budget for the text before the cursor."""
    suffixTokens: int = 256
    """Token budget for the text after the cursor."""
    contextTokens: int = 1024
    """Token budget for repository context (definitions, signatures, similar code, API
    schemas and configuration) placed before the file."""
    totalTokens: int = 3072
    """Cap on the whole prompt: the context gets what prefix and suffix leave of it."""
    template: str = "auto"
    """FIM template family: auto (from the GGUF), qwen2.5-coder, starcoder2, deepseek-coder,
    codellama, codestral."""
    multiline: Literal["auto", "always", "never"] = "auto"
    """auto: several lines where a block opens or a bracket opened before the cursor is left
    for the suggestion to close, one line in the middle of a line."""
    reuseSuggestion: bool = True
    """Answer without a model call when the user types what the last suggestion predicted."""
    warm: bool = True
    """Evaluate a document's prompt in the background when it is opened or focused, below any
    real request, so the first suggestion reuses it; at the cursor the editor integrations
    report, compute the suggestion there too, so a request there answers from it."""
    prefetch: bool = True
    """Once a suggestion is accepted (typed whole, or the editor's codeagent.accepted command),
    compute the next one in the background, below any real request, so the request there
    answers at once."""


@dataclass(frozen=True)
class ActionsSettings:
    maxTokens: int = 512
    """Most tokens of an explanation or of generated tests."""


@dataclass(frozen=True)
class NextEditsSettings:
    enabled: bool = True
    """Flag the uses a change of a definition affects (rename, parameters, async, constructor,
    move) with Hint diagnostics, quickfixes and an "Update all uses" action."""
    maxSites: int = 500
    """Most places flagged for the changes of all open documents together."""


@dataclass(frozen=True)
class CodegraphSettings:
    enabled: bool = True
    """Index the workspace (definitions, references, hover, workspace symbols, context)."""
    extraRepositories: tuple[str, ...] = ()
    """More folders to index beside the workspace folders (e.g. a checkout of an internal
    library the workspace uses), each labelled by its folder name."""
    exclude: tuple[str, ...] = ()
    """Extra gitignore-style patterns never indexed (on top of .gitignore files)."""
    maxFileBytes: int = 1_000_000
    """Files larger than this are not indexed."""
    cacheDir: str = ""
    """Folder of the index databases; empty = $XDG_CACHE_HOME/codeagent-lsp/codegraph
    (~/.cache/codeagent-lsp/codegraph when XDG_CACHE_HOME is unset)."""


@dataclass(frozen=True)
class DocumentsSettings:
    maxBytes: int = 4 * 1024 * 1024
    """Open documents larger than this (UTF-8 bytes) are not served; the editor is told once."""


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "warning"
    """Log level of the server's own log (stderr or --log-file)."""
    logCode: bool = False
    """Allow source code and prompts in logs (off by default: logs never hold code)."""


@dataclass(frozen=True)
class Settings:
    model: str = ""
    """A GGUF file path or a name from the model registry (`codeagent-lsp model list`); empty =
    $CODEAGENT_MODEL, then the default model qwen2.5-coder-0.5b."""
    modelsDir: str = ""
    """Where registry models live; empty = $CODEAGENT_MODELS_DIR, then models/ of the source
    checkout when run from one (editable install), else the user's data folder:
    $XDG_DATA_HOME/codeagent-lsp/models, by default ~/.local/share/codeagent-lsp/models."""
    engine: EngineSettings = field(default_factory=EngineSettings)
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    codegraph: CodegraphSettings = field(default_factory=CodegraphSettings)
    actions: ActionsSettings = field(default_factory=ActionsSettings)
    nextEdits: NextEditsSettings = field(default_factory=NextEditsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    documents: DocumentsSettings = field(default_factory=DocumentsSettings)

    def model_name(self) -> str:
        return self.model or os.environ.get("CODEAGENT_MODEL", "") or DEFAULT_MODEL

    def models_dir_setting(self) -> str | None:
        return self.modelsDir or None


DEFAULT_MODEL = "qwen2.5-coder-0.5b"

_MINIMUMS = {
    "engine.nGpuLayers": -1,
    "engine.memoryLimitMB": 0,
    "engine.parkMaxMB": 0,
    "engine.parkMaxAgeHours": 0,
    "engine.contextSize": 256,
    "engine.slots": 1,
    "engine.batchSize": 16,
    "engine.threads": 0,
    "completion.maxTokens": 1,
    "completion.prefixTokens": 16,
    "completion.suffixTokens": 0,
    "completion.contextTokens": 0,
    "completion.totalTokens": 64,
    "completion.temperature": 0,
    "codegraph.maxFileBytes": 1,
    "actions.maxTokens": 16,
    "nextEdits.maxSites": 1,
    "documents.maxBytes": 1,
    "remote.slots": 1,
    "remote.connectTimeout": 0.01,
    "remote.readTimeout": 0.01,
    "remote.retrySeconds": 0,
    "remote.maxRetrySeconds": 0,
}


_MAXIMUMS = {
    # Bounds on what one client can make the server hold or compute: a context of 500,000
    # tokens is gigabytes of KV cache, 10^6 generated tokens minutes of a core.
    "engine.contextSize": 131072,
    "engine.slots": 64,
    "engine.batchSize": 8192,
    "engine.threads": 256,
    "completion.maxTokens": 1024,
    "completion.prefixTokens": 32768,
    "completion.suffixTokens": 32768,
    "completion.contextTokens": 32768,
    "completion.totalTokens": 65536,
    "actions.maxTokens": 4096,
    "nextEdits.maxSites": 10000,
    "codegraph.maxFileBytes": 16 * 1024 * 1024,
    "documents.maxBytes": 64 * 1024 * 1024,
    "remote.slots": 256,
    "completion.temperature": 10,
}


def merge(base: Settings, raw: Any) -> tuple[Settings, list[str]]:
    """Overlay a client-supplied dict on `base`; returns the result and one message per bad key."""
    errors: list[str] = []
    merged = _merge_dataclass(base, raw, SECTION, errors)
    return merged, errors


def _merge_dataclass(base: Any, raw: Any, path: str, errors: list[str]) -> Any:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        errors.append(f"{path}: expected an object, got {type(raw).__name__}")
        return base
    hints = typing.get_type_hints(type(base))
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            errors.append(f"{path}.{key}: unknown setting (ignored)")
            continue
        current = getattr(base, key)
        child = f"{path}.{key}"
        if dataclasses.is_dataclass(current):
            changes[key] = _merge_dataclass(current, value, child, errors)
            continue
        converted = _convert(value, hints[key], child, errors)
        if converted is not _INVALID:
            changes[key] = converted
    return dataclasses.replace(base, **changes)


_INVALID = object()


def _convert(value: Any, hint: Any, path: str, errors: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        allowed = ", ".join(repr(a) for a in typing.get_args(hint))
        errors.append(f"{path}: expected one of {allowed}, got {value!r}")
        return _INVALID
    if origin is tuple:  # lists of strings arrive as JSON arrays
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        errors.append(f"{path}: expected a list of strings, got {value!r}")
        return _INVALID
    if origin in (types.UnionType, typing.Union):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    ok = _type_ok(value, hint)
    if not ok:
        errors.append(f"{path}: expected {_describe(hint)}, got {value!r}")
        return _INVALID
    value = float(value) if hint is float else value
    minimum = _MINIMUMS.get(path.removeprefix(SECTION + "."))
    if minimum is not None and value < minimum:
        errors.append(f"{path}: must be at least {minimum}, got {value!r}")
        return _INVALID
    maximum = _MAXIMUMS.get(path.removeprefix(SECTION + "."))
    if maximum is not None and value > maximum:
        errors.append(f"{path}: must be at most {maximum}, got {value!r}")
        return _INVALID
    return value


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # JSON has no NaN or Infinity, but Python's parser reads them
        return isinstance(value, int | float) and not isinstance(value, bool) and isfinite(value)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(hint, str(hint))


def documented_keys() -> list[tuple[str, str, str]]:
    """(key, default, doc) for every leaf setting, read from the attribute docstrings.

    The README's settings table is checked against this list by a test, so no key goes
    undocumented.
    """
    return [(key, repr(default), doc) for key, _, default, doc in _leaves(Settings(), SECTION)]


def json_schema() -> dict[str, dict[str, Any]]:
    """JSON-schema properties, one per leaf key (`codeagent.engine.threads`), for editors that
    render settings from a schema: VS Code's `contributes.configuration`, LSP4IJ's
    settings.schema.json. `codeagent-lsp settings schema` prints it."""
    properties = {}
    for key, hint, default, doc in _leaves(Settings(), SECTION):
        schema = _json_type(hint)
        minimum = _MINIMUMS.get(key.removeprefix(SECTION + "."))
        if minimum is not None:
            schema["minimum"] = minimum
        maximum = _MAXIMUMS.get(key.removeprefix(SECTION + "."))
        if maximum is not None:
            schema["maximum"] = maximum
        value = list(default) if isinstance(default, tuple) else default
        properties[key] = {**schema, "default": value, "description": doc}
        if key.removeprefix(SECTION + ".").startswith(MACHINE_SCOPED):
            properties[key]["scope"] = "machine"
    return properties


MACHINE_SCOPED = (
    "model", "modelsDir", "engine.", "remote.", "logging.", "codegraph.cacheDir",
    "codegraph.extraRepositories",
)  # fmt: skip
"""Keys that choose what runs, what is read and where data goes: editors that honour a scope
(VS Code) take them from the user's own settings, never from a repository's. On a shared node
they are the node's alone (`node_owned`)."""


WORK_BOUNDS = ("codegraph.maxFileBytes", "documents.maxBytes")
"""Sizes that bound the work one document costs (what is parsed, what is served): on a shared
node a client may lower them, never raise them above the node's own (`capped_by`)."""


def capped_by(settings: Settings, node: Settings) -> Settings:
    """`settings` with each of WORK_BOUNDS at most the node's value."""
    for key in WORK_BOUNDS:
        section_name, name = key.split(".")
        section, cap = getattr(settings, section_name), getattr(getattr(node, section_name), name)
        if getattr(section, name) > cap:
            section = dataclasses.replace(section, **{name: cap})
            settings = dataclasses.replace(settings, **{section_name: section})
    return settings


def node_owned(raw: Any) -> tuple[Any, list[str]]:
    """A client's settings without the keys a node decides (MACHINE_SCOPED), and one message
    per key left out. Non-objects pass through for `merge` to report."""
    dropped: list[str] = []
    kept = _without_owned(raw, "", dropped)
    return kept, [f"{SECTION}.{k}: set by the node, not by a client (ignored)" for k in dropped]


def _without_owned(raw: Any, path: str, dropped: list[str]) -> Any:
    if not isinstance(raw, dict):
        return raw
    kept: dict[str, Any] = {}
    for key, value in raw.items():
        child = f"{path}{key}"
        if any(
            child == p.rstrip(".") or (p[-1] == "." and child.startswith(p)) for p in MACHINE_SCOPED
        ):
            dropped.append(child)
        else:
            kept[key] = _without_owned(value, child + ".", dropped)
    return kept


def _json_type(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return {"type": "string", "enum": list(typing.get_args(hint))}
    if origin is tuple:
        return {"type": "array", "items": {"type": "string"}}
    if origin in (types.UnionType, typing.Union):  # X | None, as _convert reads it
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return {"type": [_json_type(inner)["type"], "null"]}
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": names[hint]}


def _leaves(obj: Any, path: str) -> typing.Iterator[tuple[str, Any, Any, str]]:
    """(key, type hint, default, doc) for every leaf setting under `obj`."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{path}.{f.name}")
        else:
            yield f"{path}.{f.name}", hints[f.name], value, _attribute_doc(type(obj), f.name)


def _attribute_doc(cls: type, name: str) -> str:
    source = inspect.getsource(cls)
    match = re.search(rf"^\s+{name}:[^\n]*\n\s+\"\"\"(.*?)\"\"\"", source, re.S | re.M)
    return " ".join(match.group(1).split()) if match else ""
