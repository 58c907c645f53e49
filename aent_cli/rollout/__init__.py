"""Rollout backends behind one interface: `hf` (transformers generate) and `vllm`."""
from aent_cli.rollout.base import Completion, PromptCompletions, RolloutBackend, SamplingParams

__all__ = ["Completion", "PromptCompletions", "RolloutBackend", "SamplingParams", "build_rollout"]


def build_rollout(cfg, model, tokenizer) -> RolloutBackend:
    """The backend `cfg.backend` names (cfg = the `rollout` config section)."""
    if cfg.backend == "hf":
        from aent_cli.rollout.hf import HFRollout  # transformers, only when building this backend

        return HFRollout(model, tokenizer)
    if cfg.backend == "vllm":
        from aent_cli.rollout.vllm import VLLMRollout  # the optional vLLM extra

        return VLLMRollout(cfg, model, tokenizer)
    raise ValueError(f"unknown rollout backend {cfg.backend!r}")
