"""Rollout backends behind one interface: `hf` (transformers generate) and `vllm`."""
from typing import Callable, Dict

from aent_cli.rollout.base import Completion, PromptCompletions, RolloutBackend, SamplingParams

__all__ = ["BACKENDS", "Completion", "PromptCompletions", "RolloutBackend", "SamplingParams", "build_rollout"]


def _hf(cfg, model, tokenizer) -> RolloutBackend:
    from aent_cli.rollout.hf import HFRollout  # transformers, only when building this backend

    return HFRollout(model, tokenizer)


def _vllm(cfg, model, tokenizer) -> RolloutBackend:
    from aent_cli.rollout.vllm import VLLMRollout  # vLLM is optional: imported only when chosen

    return VLLMRollout(cfg, model, tokenizer)


# name -> builder(cfg.rollout, model, tokenizer); its keys are the values `rollout.backend` accepts.
BACKENDS: Dict[str, Callable[..., RolloutBackend]] = {"hf": _hf, "vllm": _vllm}


def build_rollout(cfg, model, tokenizer) -> RolloutBackend:
    """The backend `cfg.backend` names (cfg = the `rollout` config section)."""
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown rollout backend {cfg.backend!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[cfg.backend](cfg, model, tokenizer)
