"""The model, wherever it runs; knows tokens, not LSP, files or prompts.

- `backend`: the contract the Assistant uses (`Backend`, `Request`, `Generation`,
  `RequestRecord`, prompt `Segment`s), implemented by `embedded.EmbeddedBackend` and
  `remote.RemoteBackend`.
- Embedded: `supervisor` starts and survives the llama.cpp worker process (`worker`, spoken
  to through `protocol`), which runs `engine.Engine` over `llama` (the C API), with a KV-cache
  slot per document (`slots`, parked to disk by `parking`); `pool` shares one per node;
  `faults` injects worker deaths for tests.
- Remote: `remote` and `replicas` (llama-server or OpenAI-compatible services).
- `models`: the registry, `model pull`/`add`, GGUF checks (`gguf_limits`).

May import `settings`, `metrics` and `security` (egress checks, redaction); never `context/`,
`codegraph/`, `actions/`, `features/`, pygls or lsprotocol.
"""
