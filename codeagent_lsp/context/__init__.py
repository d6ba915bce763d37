"""The completion prompt: what the text around the cursor, the CodeGraph and the workspace's
docs become before the model sees them, and what its answer becomes after.

- `templates`: fill-in-the-middle formats per model family; `chat`: their instruct formats.
- `budget`: the text around the cursor cut to token budgets, stable while typing.
- `builder`: repository context from the CodeGraph; `assets`: the workspace's schemas,
  configuration and docs as quotable sections.
- `postprocess`: the model's raw infill cleaned up for the cursor.

Entry points: `builder.ContextBuilder`, `templates.detect_template`, `postprocess`'s
functions, all used by `assistant`. May import `codegraph`, `lines`, `engine.backend` (prompt
segments) and `security`; never pygls or lsprotocol, never `actions/` or `features/`.
"""
