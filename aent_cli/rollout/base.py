"""The rollout interface: prompts in, n sampled completions each out, with the token ids training needs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Protocol


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 = off
    max_new_tokens: int = 16
    seed: Optional[int] = None


@dataclass
class Completion:
    text: str
    token_ids: List[int]  # generated ids, ending with EOS when the model stopped by itself
    finished: bool  # stopped at EOS (False: cut at max_new_tokens)


@dataclass
class PromptCompletions:
    prompt: str
    prompt_ids: List[int]
    completions: List[Completion] = field(default_factory=list)


class RolloutBackend(Protocol):
    def generate(self, prompts: List[str], params: SamplingParams) -> List[PromptCompletions]:
        """For each prompt, `params.n` completions, in prompt order."""

    def sync_weights(self, model) -> None:
        """Make the backend sample from `model`'s current weights (no-op when it shares them)."""

    def close(self) -> None:
        """Free what the backend holds (engines, processes)."""
