"""Prompt templates (`model.prompt_template`): how a problem becomes the text the policy continues."""
from __future__ import annotations

from typing import Any, Optional

from aent_cli.errors import ConfigError

TEMPLATES = ("auto", "qwen_boxed", "chat", "plain")
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# The Qwen2.5-Math chain-of-thought prompt, written out so base models without a chat template
# (Qwen2.5-Math-1.5B, the paper's setting (a)) get exactly what they were tuned on.
QWEN_BOXED = ("<|im_start|>system\n" + INSTRUCTION + "<|im_end|>\n"
              "<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n")


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_template(template: str, tokenizer: Any = None) -> str:
    """The concrete template `auto` stands for with this tokenizer: `chat` if it has a chat
    template, else `qwen_boxed`. Raises ConfigError for unknown names."""
    if template not in TEMPLATES:
        raise ConfigError(f"model.prompt_template={template!r} is unknown: one of {', '.join(TEMPLATES)}")
    if template == "auto":
        return "chat" if _has_chat_template(tokenizer) else "qwen_boxed"
    return template


def render_prompt(problem: str, template: str, tokenizer: Optional[Any] = None) -> str:
    name = resolve_template(template, tokenizer)
    if name == "plain":
        return problem  # the embedded model's prompts are already in its own format
    if name == "qwen_boxed":
        return QWEN_BOXED.replace("{problem}", problem)
    if not _has_chat_template(tokenizer):
        raise ConfigError("model.prompt_template='chat' needs a tokenizer with a chat_template; "
                          "use qwen_boxed or plain for this model")
    messages = [{"role": "user", "content": problem + "\n" + INSTRUCTION}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
