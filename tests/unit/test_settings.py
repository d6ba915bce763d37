"""The typed settings tree: merging, clear errors, and a README entry for every key."""

from __future__ import annotations

from codeagent_lsp import settings
from tests.conftest import REPO


def test_every_setting_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    for key, default, doc in settings.documented_keys():
        assert doc, f"{key} has no docstring"
        assert f"| `{key}` | `{default}` | {doc} |" in readme, f"README lacks {key}"


def test_layers_merge_and_keep_what_they_do_not_name():
    first, errors = settings.merge(settings.Settings(), {"completion": {"maxTokens": 10}})
    second, more = settings.merge(first, {"engine": {"slots": 2}, "model": "x.gguf"})
    assert not errors and not more
    assert second.completion.maxTokens == 10
    assert second.engine.slots == 2 and second.model == "x.gguf"


def test_bad_values_are_reported_by_key_and_ignored():
    merged, errors = settings.merge(
        settings.Settings(),
        {
            "completion": {"maxTokens": "many", "temperature": -1, "multiline": "sometimes"},
            "engine": 4,
            "unknown": True,
            "logging": {"logCode": "yes"},
        },
    )
    assert merged == settings.Settings()
    joined = "\n".join(errors)
    for key in (
        "completion.maxTokens",
        "completion.temperature",
        "completion.multiline",
        "codeagent.engine",
        "codeagent.unknown",
        "logging.logCode",
    ):
        assert key in joined


def test_numbers_are_accepted_where_floats_are_expected():
    merged, errors = settings.merge(settings.Settings(), {"completion": {"temperature": 1}})
    assert not errors and merged.completion.temperature == 1.0
    _, errors = settings.merge(settings.Settings(), {"engine": {"slots": True}})
    assert errors  # a boolean is not a number here


def test_model_comes_from_the_setting_then_the_environment(monkeypatch):
    monkeypatch.setenv("CODEAGENT_MODEL", "from-env")
    assert settings.Settings().model_name() == "from-env"
    assert settings.Settings(model="from-setting").model_name() == "from-setting"
    monkeypatch.delenv("CODEAGENT_MODEL")
    assert settings.Settings().model_name() == settings.DEFAULT_MODEL
