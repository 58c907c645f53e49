"""The entropy coefficient lambda: adaptive (eq. 4.1 of the AEnt paper) or constant."""
from __future__ import annotations

from typing import Dict


class AdaptiveEntropyCoef:
    """lambda <- clip(lambda - lr * min(H - h_low, 0) + lr * min(h_high - H, 0), min, max).

    So lambda rises by lr * (h_low - H) below the band, falls by lr * (H - h_high) above it, and is
    unchanged inside. `update(H, step)` applies the rule only when step >= start_step; before that
    lambda stays at `init`. mode="constant" never changes lambda (EntReg, the coefficient ablation).
    """

    def __init__(
        self,
        init: float,
        h_low: float = 0.0,
        h_high: float = float("inf"),
        lr: float = 0.0,
        min: float = 0.0,  # noqa: A002 - the paper's and the config's name
        max: float = float("inf"),  # noqa: A002
        start_step: int = 0,
        mode: str = "adaptive",
    ) -> None:
        if mode not in ("adaptive", "constant"):
            raise ValueError(f"coefficient mode must be adaptive or constant, not {mode!r}")
        if h_low > h_high:
            raise ValueError(f"h_low={h_low} > h_high={h_high}")
        if mode == "adaptive" and not min <= init <= max:
            raise ValueError(f"init={init} is outside [min, max] = [{min}, {max}]")
        self.init, self.h_low, self.h_high, self.lr = float(init), float(h_low), float(h_high), float(lr)
        self.min, self.max, self.start_step, self.mode = float(min), float(max), int(start_step), mode
        self._value = float(init)

    @property
    def value(self) -> float:
        return self._value

    def update(self, entropy: float, step: int) -> float:
        if self.mode == "constant" or step < self.start_step:
            return self._value
        h = float(entropy)
        new = self._value - self.lr * min(h - self.h_low, 0.0) + self.lr * min(self.h_high - h, 0.0)
        self._value = min(max(new, self.min), self.max)
        return self._value

    def state_dict(self) -> Dict[str, float]:
        return {
            "value": self._value, "init": self.init, "h_low": self.h_low, "h_high": self.h_high,
            "lr": self.lr, "min": self.min, "max": self.max, "start_step": self.start_step, "mode": self.mode,
        }

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self._value = float(state["value"])


def build_coef(algo, steps_per_epoch: int) -> AdaptiveEntropyCoef:
    """The coefficient controller an `algo` config section asks for.

    `coef.start_epoch` (1-based, the paper's "updates from epoch 3") becomes the first global step of
    that epoch: (start_epoch - 1) * steps_per_epoch + 1; otherwise `coef.start_step` is used as is.
    """
    c = algo.coef
    start = c.start_step
    if c.start_epoch is not None:
        start = int(round((c.start_epoch - 1) * steps_per_epoch)) + 1
    return AdaptiveEntropyCoef(
        init=c.init, h_low=algo.h_low, h_high=algo.h_high, lr=c.lr, min=c.min, max=c.max,
        start_step=start, mode=c.mode,
    )
