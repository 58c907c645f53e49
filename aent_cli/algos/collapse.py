"""The entropy-collapse alarm (Proposition 1 of the AEnt paper: a collapsed entropy stops learning).

For a softmax policy pi = softmax(z) over one state's actions and advantages |A(a)| <= A_max, the
policy gradient with respect to the logits is g = sum_a pi_a A(a) (e_a - pi), and

    ||g||_2 <= 2 * A_max * (1 - sum_a pi_a^2) <= 2 * A_max * H(pi)        (H in nats),

because ||e_a - pi||_2 <= ||e_a - pi||_1 = 2 (1 - pi_a) and 1 - x <= -ln x. So once the token entropy
has fallen to a small fraction of its start, every token's gradient is at most that fraction of what
it could be at the start: RL has (nearly) stopped learning, whatever the rewards say.

`EntropyCollapseAlarm` tracks the ratio

    actor/entropy_collapse = mean H over the last `window` steps / mean H over the first `window` steps

(H = the per-step mean token entropy over the whole vocabulary, `actor/entropy`) and trips once, at
the first step where the ratio falls below `fraction` with both windows full.
"""
from __future__ import annotations

from collections import deque
from typing import Dict, List, Optional

import torch


def policy_gradient_bound(probs: torch.Tensor, a_max: float) -> torch.Tensor:
    """2 * a_max * H(probs) per row (nats): Proposition 1's bound on the logit gradient's 2-norm.
    probs: [..., V] rows summing to 1."""
    logp = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
    return 2.0 * a_max * -(probs * logp).sum(-1)


class EntropyCollapseAlarm:
    """`update(entropy, step)` returns the current ratio (float('nan') until the first window is full);
    `tripped_at` is the step the alarm first fired (None before). fraction <= 0 disables it."""

    def __init__(self, fraction: float, window: int = 5) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"entropy collapse fraction must satisfy 0 <= fraction < 1, not {fraction}")
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window}")
        self.fraction, self.window = float(fraction), int(window)
        self.first: List[float] = []
        self.recent: deque = deque(maxlen=self.window)
        self.tripped_at: Optional[int] = None

    @property
    def start(self) -> Optional[float]:
        return sum(self.first) / len(self.first) if len(self.first) == self.window else None

    def update(self, entropy: float, step: int) -> float:
        entropy = float(entropy)
        if len(self.first) < self.window:
            self.first.append(entropy)
        self.recent.append(entropy)
        if self.start is None or self.start <= 0.0:
            return float("nan")
        ratio = sum(self.recent) / len(self.recent) / self.start
        if self.tripped_at is None and self.fraction > 0.0 and ratio < self.fraction:
            self.tripped_at = int(step)
        return ratio

    def just_tripped(self, step: int) -> bool:
        return self.tripped_at == int(step)

    def state_dict(self) -> Dict[str, object]:
        return {"first": list(self.first), "recent": list(self.recent), "tripped_at": self.tripped_at}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.first = [float(x) for x in state.get("first", [])]
        self.recent = deque((float(x) for x in state.get("recent", [])), maxlen=self.window)
        self.tripped_at = state.get("tripped_at")
