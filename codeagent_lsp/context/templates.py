"""Fill-in-the-middle prompt templates, one per model family.

A prompt is a list of segments: control tokens (by their text in the model's vocabulary, looked up
as single token ids so that source code can never smuggle one in) and plain text (tokenized with
special-token parsing off). Segments are ordered from the most to the least stable, so the KV
cache of a document survives typing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from codeagent_lsp.engine.backend import Segment, Special


@dataclass(frozen=True)
class FimTemplate:
    family: str
    prefix_token: str
    suffix_token: str
    middle_token: str | None
    suffix_first: bool = False
    """SPM order (suffix, then prefix): the cursor sits at the very end of the prompt."""
    text_lead: str = ""
    """Text glued before prefix and suffix (CodeLlama's tokenizer expects a space)."""
    repo_token: str | None = None
    file_token: str | None = None
    stop_tokens: tuple[str, ...] = field(default_factory=tuple)
    """Control tokens that end a suggestion besides the model's end-of-generation tokens."""

    def control_tokens(self) -> list[str]:
        tokens = [self.prefix_token, self.suffix_token, self.middle_token, self.repo_token]
        return [t for t in [*tokens, self.file_token] if t]

    def build(
        self,
        prefix: str,
        suffix: str,
        *,
        path: str | None = None,
        repo: str | None = None,
        context_files: list[tuple[str, str]] | None = None,
    ) -> list[Segment]:
        """Segments of the prompt, most stable first; `context_files` are (path, text) pairs."""
        segments: list[Segment] = self._repo_header(repo, path, context_files or [])
        pre, suf = Special(self.prefix_token), Special(self.suffix_token)
        lead = self.text_lead
        if self.suffix_first:
            segments += [suf, lead + suffix, pre, lead + prefix]
        else:
            segments += [pre, lead + prefix, suf, lead + suffix]
        if self.middle_token:
            segments.append(Special(self.middle_token))
        return [s for s in segments if s != ""]

    def context_cost(self, path: str, text: str, count: Callable[[str], int]) -> int:
        """Tokens one context file takes in this template's prompt, exactly as `build` writes
        it (the budget is kept to the token)."""
        if self.repo_token and self.file_token:
            return 1 + count(f"{path}\n{text}\n")
        return count(_comment_block(path, text))

    def _repo_header(
        self, repo: str | None, path: str | None, context_files: list[tuple[str, str]]
    ) -> list[Segment]:
        if not (self.repo_token and self.file_token):
            return [_comment_block(p, text) for p, text in context_files]
        segments: list[Segment] = [Special(self.repo_token), f"{repo or 'workspace'}\n"]
        for file_path, text in context_files:
            segments += [Special(self.file_token), f"{file_path}\n{text}\n"]
        if path:
            segments += [Special(self.file_token), f"{path}\n"]
        return segments


def _comment_block(path: str, text: str) -> str:
    """Context for models without a multi-file layout: a commented header, then the code."""
    return f"# Path: {path}\n{text}\n\n"


TEMPLATES: dict[str, FimTemplate] = {
    t.family: t
    for t in [
        FimTemplate(
            "qwen2.5-coder",
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
            repo_token="<|repo_name|>",
            file_token="<|file_sep|>",
            stop_tokens=(
                "<|fim_pad|>",
                "<|file_sep|>",
                "<|repo_name|>",
                "<|fim_prefix|>",
                "<|endoftext|>",
                "<|im_end|>",
            ),
        ),
        FimTemplate(
            "starcoder2",
            "<fim_prefix>",
            "<fim_suffix>",
            "<fim_middle>",
            repo_token="<repo_name>",
            file_token="<file_sep>",
            stop_tokens=("<file_sep>", "<fim_prefix>", "<|endoftext|>", "<fim_pad>"),
        ),
        FimTemplate(
            "deepseek-coder",
            "<｜fim▁begin｜>",
            "<｜fim▁hole｜>",
            "<｜fim▁end｜>",
            stop_tokens=("<｜end▁of▁sentence｜>", "<|EOT|>"),
        ),
        FimTemplate(
            "codellama",
            "▁<PRE>",
            "▁<SUF>",
            "▁<MID>",
            text_lead=" ",
            stop_tokens=("▁<EOT>",),
        ),
        # Codestral is trained suffix-first: [SUFFIX]suffix[PREFIX]prefix, then the middle.
        FimTemplate("codestral", "[PREFIX]", "[SUFFIX]", None, suffix_first=True),
    ]
}


class TemplateError(Exception):
    pass


def detect_template(
    setting: str, has_token: Callable[[str], bool], registry_family: str | None = None
) -> FimTemplate:
    """The template named in settings, else the registry's family, else the one whose control
    tokens the model's vocabulary holds (checked first to last: the most specific wins)."""
    for name in (setting, registry_family):
        if name and name != "auto":
            if name not in TEMPLATES:
                known = ", ".join(TEMPLATES)
                raise TemplateError(f"unknown FIM template {name!r}; known: {known}")
            return TEMPLATES[name]
    for template in TEMPLATES.values():
        if all(has_token(t) for t in template.control_tokens()):
            return template
    raise TemplateError(
        "the model has no fill-in-the-middle tokens of a known family; set "
        "codeagent.completion.template to one of " + ", ".join(TEMPLATES)
    )
