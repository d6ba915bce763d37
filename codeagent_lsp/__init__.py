"""codeagent-lsp: a self-hosted AI coding assistant as a language server."""

__version__ = "0.1.0"
