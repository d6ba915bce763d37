"""The editor configurations in editors/ name real settings with values the server accepts, and
their settings schemas are the one settings.py generates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from codeagent_lsp import settings
from codeagent_lsp.security.feature import Feature
from tests.conftest import REPO

EDITORS = REPO / "editors"


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """`codeagent.engine.threads: 1` as `{"engine": {"threads": 1}}`: what VS Code's
    getConfiguration("codeagent") and LSP4IJ's expandConfiguration hand the server."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.removeprefix(settings.SECTION + ".").split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _accepted(raw: dict[str, Any]) -> settings.Settings:
    merged, errors = settings.merge(settings.Settings(), raw)
    assert not errors
    return merged


def test_vscode_contributes_the_generated_settings():
    manifest = json.loads((EDITORS / "vscode" / "package.json").read_text())
    (server,) = [c for c in manifest["contributes"]["configuration"] if c["id"] == "codeagent"]
    assert server["properties"] == settings.json_schema(), (
        "regenerate with: codeagent-lsp settings schema --write editors/vscode/package.json"
    )
    defaults = {key: schema["default"] for key, schema in server["properties"].items()}
    assert _accepted(_nested(defaults)) == settings.Settings()


def test_schema_types_match_what_the_server_accepts():
    schema = settings.json_schema()
    assert schema["codeagent.engine.flashAttention"]["enum"] == ["auto", "on", "off"]
    assert schema["codeagent.codegraph.exclude"] == {
        "type": "array",
        "items": {"type": "string"},
        "default": [],
        "description": schema["codeagent.codegraph.exclude"]["description"],
    }
    assert schema["codeagent.completion.maxTokens"]["minimum"] == 1
    assert schema["codeagent.completion.temperature"]["type"] == "number"
    assert all(entry["description"] for entry in schema.values())


def test_vscode_commands_pick_the_servers_action_tags():
    source = (EDITORS / "vscode" / "src" / "extension.ts").read_text()
    for tag in (Feature.EXPLAIN, Feature.DOCSTRING, Feature.TESTS, Feature.FIX):
        assert f'tag: "{tag}"' in source
    manifest = json.loads((EDITORS / "vscode" / "package.json").read_text())
    for command in manifest["contributes"]["commands"]:
        assert f'"{command["command"]}"' in source


def test_jetbrains_template_names_real_settings():
    folder = EDITORS / "jetbrains"
    template = json.loads((folder / "template.json").read_text())
    assert template["programArgs"]["default"] == "codeagent-lsp"
    assert template["expandConfiguration"] is True
    language_ids = {m["languageId"] for m in template["fileTypeMappings"]}
    language_ids |= {m["languageId"] for m in template["languageMappings"]}
    assert {"python", "java", "go", "rust", "typescript", "cpp"} <= language_ids
    flat = json.loads((folder / "settings.json").read_text())
    assert set(flat) <= set(settings.json_schema())
    assert _accepted(_nested(flat)).model == "qwen2.5-coder-0.5b"
    _accepted(json.loads((folder / "initializationOptions.json").read_text()))
    schema = json.loads((folder / "settings.schema.json").read_text())
    assert schema["properties"] == settings.json_schema(), (
        "regenerate with: codeagent-lsp settings schema > editors/jetbrains/settings.schema.json"
    )


def test_helix_languages_toml_parses_and_passes_settings():
    config = tomllib.loads((EDITORS / "helix" / "languages.toml").read_text())
    server = config["language-server"]["codeagent"]
    assert server["command"] == "codeagent-lsp"
    _accepted(server["config"])
    languages = {entry["name"]: entry for entry in config["language"]}
    assert {"python", "rust", "go", "typescript", "java", "c", "cpp"} <= set(languages)
    for entry in languages.values():
        # Helix replaces a language's default servers: the usual one stays first.
        assert entry["language-servers"][-1] == "codeagent"
        assert len(entry["language-servers"]) >= 2


EMACS = shutil.which("emacs")


@pytest.mark.skipif(
    EMACS is None and not os.environ.get("CI"),
    reason="Emacs is not installed (.ci/run installs emacs-nox and elpa-eglot; CI fails without)",
)
def test_emacs_config_loads(tmp_path: Path):
    assert EMACS, "Emacs must be installed in CI"
    script = EDITORS / "emacs" / "codeagent.el"
    done = subprocess.run(
        [
            EMACS,
            "--batch",
            # -q, not -Q: site-start must run, it puts Debian's elpa-eglot on the load path
            "-q",
            "-l",
            str(script),
            "--eval",
            # the entry's contact is a function: call it as eglot does
            '(princ (format "%S" (funcall (cdr (assoc codeagent-modes'
            " eglot-server-programs)) nil)))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert "codeagent-lsp" in done.stdout


def test_emacs_config_is_balanced():
    """Without Emacs: parentheses balance outside strings and comments."""
    text = (EDITORS / "emacs" / "codeagent.el").read_text()
    depth, in_string, in_comment, escaped = 0, False, False, False
    for char in text:
        if in_comment:
            in_comment = char != "\n"
        elif in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == ";":
            in_comment = True
        elif char == '"':
            in_string = True
        elif char in "()":
            depth += 1 if char == "(" else -1
            assert depth >= 0
    assert depth == 0 and not in_string
