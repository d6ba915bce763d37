"""Instruct prompts in each model family's own chat format, written by this project.

The GGUF's embedded Jinja chat template is never rendered: rendering it unsandboxed was a
remote-code-execution bug (CVE-2024-34359), and a fixed format per family is all we need. As in
FIM prompts, control tokens are segments looked up by id, so user text cannot forge a turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from codeagent_lsp.engine.backend import Segment, Special


@dataclass(frozen=True)
class ChatTemplate:
    family: str
    stop_tokens: tuple[str, ...]
    """Control tokens that end the answer besides the model's end-of-generation tokens."""

    def build(self, system: str, user: str) -> list[Segment]:
        raise NotImplementedError


class ChatML(ChatTemplate):
    """Qwen2.5-Coder-Instruct."""

    def build(self, system: str, user: str) -> list[Segment]:
        start, end = Special("<|im_start|>"), Special("<|im_end|>")
        return [
            start,
            f"system\n{system}",
            end,
            "\n",
            start,
            f"user\n{user}",
            end,
            "\n",
            start,
            "assistant\n",
        ]


class Instruction(ChatTemplate):
    """DeepSeek-Coder-Instruct and StarCoder2 style: markdown headings, no control tokens."""

    def build(self, system: str, user: str) -> list[Segment]:
        return [f"{system}\n### Instruction:\n{user}\n### Response:\n"]


class Inst(ChatTemplate):
    """CodeLlama-Instruct and Codestral: [INST] ... [/INST] after the begin-of-text token."""

    def build(self, system: str, user: str) -> list[Segment]:
        return [Special("<s>"), f"[INST] {system}\n\n{user} [/INST]"]


CHAT_TEMPLATES: dict[str, ChatTemplate] = {
    "qwen2.5-coder": ChatML("qwen2.5-coder", ("<|im_end|>", "<|endoftext|>")),
    "deepseek-coder": Instruction("deepseek-coder", ("<|EOT|>", "<｜end▁of▁sentence｜>")),  # noqa: RUF001
    "starcoder2": Instruction("starcoder2", ("<|endoftext|>",)),
    "codellama": Inst("codellama", ("</s>",)),
    "codestral": Inst("codestral", ("</s>",)),
}


def chat_template(family: str) -> ChatTemplate:
    """The chat format of a FIM family's instruct models (every family has one)."""
    return CHAT_TEMPLATES[family]
