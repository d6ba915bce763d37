"""LSP features, one module each, with `register(server)`; each translates LSP to calls on the
Assistant (completion pipeline) and back, and nothing below this package imports pygls."""
