"""codeagent-lsp: a self-hosted AI coding assistant as a language server.

Layers, each importing only the ones below it (the README's "Layout" draws them):
`cli` (the one entry point) -> `server`, `transport`, `node`, `features/` (the LSP layer: the
only code that imports pygls or lsprotocol) -> `actions/`, `nextedits`, `headless` ->
`assistant` (the completion pipeline) -> `context/` (prompts) -> `codegraph/` and `engine/`
-> `security/` and `settings`. `bench/` and `doctor/` measure and check the layers below the
LSP one.
"""

__version__ = "0.1.0"
