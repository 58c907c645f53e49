"""The token ids that end a response: one set for every backend, the `finished` flag and the log-prob mask.

A model can end its answer with any of several ids: the tokenizer's `eos_token_id`, every id of
`generation_config.eos_token_id` (an int or a list: Llama-3-Instruct [128001, 128009], Gemma-2-it
[1, 107]) and, for a tokenizer with a chat template, the template's end-of-turn token (`<|im_end|>`,
`<|eot_id|>`, `<end_of_turn>`). A row stops at the first of them; that token is part of the response
(it is what the policy learns to emit, so it has a log-prob in the loss).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

_MARK = "\u2063aent-end-of-turn-probe\u2063"  # text no template rewrites; what follows it ends the turn


def _ids(value) -> List[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value if v is not None]


def end_of_turn_id(tokenizer) -> Optional[int]:
    """The special token the chat template puts right after an assistant message, or None (no chat
    template, or nothing special after the message)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": _MARK}], tokenize=False)
    except Exception:  # noqa: BLE001 - templates that reject this exchange have no end-of-turn we can read
        return None
    if not isinstance(text, str) or _MARK not in text:
        return None
    tail = text.split(_MARK, 1)[1]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special |= {i for i, token in added.items() if getattr(token, "special", False)}
    for token_id in tokenizer.encode(tail, add_special_tokens=False):
        if token_id in special:
            return int(token_id)
        if tokenizer.decode([token_id]).strip():
            return None  # ordinary text first: the template ends the turn with no special token
    return None


def stop_token_ids(tokenizer, model=None) -> Tuple[int, ...]:
    """The ids that end a response, tokenizer EOS first: EOS, the model's generation_config
    eos_token_id(s), and the chat template's end-of-turn token; sorted after the first, no repeats."""
    first = _ids(getattr(tokenizer, "eos_token_id", None))
    more = _ids(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    eot = end_of_turn_id(tokenizer)
    if eot is not None:
        more.append(eot)
    rest = sorted(set(more) - set(first))
    return tuple(first + rest)


def cut_at_stop(token_ids: Sequence[int], stops: Iterable[int]) -> Tuple[List[int], bool]:
    """`token_ids` up to and including the first stop id, and whether there was one."""
    stops = set(stops)
    for i, token in enumerate(token_ids):
        if token in stops:
            return list(token_ids[:i + 1]), True
    return list(token_ids), False
