"""Who may do what, on which files, and the record of it: the policy (`policy`, feature names in
`feature`), the audit log (`audit`), the one enforcement helper (`enforce`), the egress guard,
the URI and path rules, and secret redaction. Imports only the standard library, its own
modules and `pathspec`; never pygls or lsprotocol, never the layers above.

Every enforcement point (a new feature adds itself here):

- LSP requests: `server.guarded` wraps every method in `server.FEATURE_OF` in
  `enforce.enforced` (policy decision, fail-closed audit log, one row per request); the code
  action list is cut to the actions the identity may use (`server._cut_to_policy`).
- Headless commands (complete, explain, fix, tests): `cli._audited`, through `enforce.enforced`.
- Background work that no request governs, decided with `Policy.decide` for the same feature:
  warm-ups and prefetches (`features/completion._background_target`), indexing
  (`features/indexing`, audited as `index`), next-edit flags (`features/next_edits`, audited
  as `nextedit`).
- Requests the transport refuses before any feature runs (busy, rate limited):
  `server.audit_refusal`, called by `transport.Connection`; a node's clients are known by
  token first (`node`).
- Documents: `guard` (URIs inside the workspace roots, sizes) at `CodeagentServer.open_document`;
  `fileuri` gives each document one normal form.
- Files: `paths.PathPolicy` decides what is indexed (`policy.index`) and what may enter a
  prompt (`Policy.may_prompt`, applied by `codegraph/workspace` and the Assistant); `roots`
  keeps reads inside the workspace; `nodepaths` maps a node's repositories by name, each
  checked with `Policy.repository_open`.
- Prompts: `redact` removes secrets from every prompt (`assistant`) and indexed asset
  (`context/assets`).
- Network: `egress.guard_process` refuses any connection but this machine's and the policy's
  inference services, audited as `network`; `egress.check_inference_url` checks each URL.
- Model: a role without a model feature loads no engine (`CodeagentServer.may_use_model`).
"""
