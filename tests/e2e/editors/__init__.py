"""Real editors driven headless: Neovim 0.12 (ghost text), Emacs with eglot, and each
editor's own way of sending settings."""
