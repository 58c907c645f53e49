"""The entropy coefficient lambda: adaptive (eq. 4.1 of the AEnt paper), constant, or target (TRL).

Every controller is an EntropyCoef: `.value`, `.update(entropy, step)`, `state_dict()` /
`load_state_dict()` and `tracked_entropy` ("clamped" or "full"): which per-step mean entropy the
trainer must pass to update.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union


class EntropyCoef:
    """What every controller shares: the value, clipped to [min, max] on each update from
    `start_step` on, and the JSON state a checkpoint keeps. A subclass gives `_next(H)`, the
    unclipped new value, and the settings `state_dict` records beside the common ones."""

    mode = ""
    tracked_entropy = "clamped"
    resumes_from: Tuple[str, ...] = ()  # the `mode`s of saved states load_state_dict accepts

    def __init__(self, init: float, min: float, max: float, start_step: int,  # noqa: A002 - the config's names
                 check_init: bool = True) -> None:
        if check_init and not min <= init <= max:
            raise ValueError(f"init={init} is outside [min, max] = [{min}, {max}]")
        self.init, self.min, self.max, self.start_step = float(init), float(min), float(max), int(start_step)
        self._value = float(init)

    @property
    def value(self) -> float:
        return self._value

    def _frozen(self) -> bool:
        return False

    def _next(self, entropy: float) -> float:
        raise NotImplementedError

    def _settings(self) -> Dict[str, Union[float, str]]:
        return {}

    def update(self, entropy: float, step: int) -> float:
        """Apply the rule to this step's mean entropy (the one `tracked_entropy` names); returns the value."""
        if self._frozen() or step < self.start_step:
            return self._value
        self._value = min(max(self._next(float(entropy)), self.min), self.max)
        return self._value

    def state_dict(self) -> Dict[str, Union[float, str]]:
        return {"value": self._value, "init": self.init, **self._settings(), "min": self.min, "max": self.max,
                "start_step": self.start_step, "mode": self.mode}

    def load_state_dict(self, state: Dict[str, Union[float, str]]) -> None:
        if state.get("mode", self.mode) not in self.resumes_from:
            raise ValueError(f"cannot resume a {self.mode} coefficient from a {state['mode']!r} one")
        self._value = float(state["value"])


class AdaptiveEntropyCoef(EntropyCoef):
    """lambda <- clip(lambda - lr * min(H - h_low, 0) + lr * min(h_high - H, 0), min, max).

    So lambda rises by lr * (h_low - H) below the band, falls by lr * (H - h_high) above it, and is
    unchanged inside. `update(H, step)` applies the rule only when step >= start_step; before that
    lambda stays at `init`. mode="constant" never changes lambda (EntReg, the coefficient ablation).
    """

    tracked_entropy = "clamped"  # eq. 4.1 steers H~ (with p = 0 it is the full entropy)
    resumes_from = ("adaptive", "constant")

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
        super().__init__(init, min, max, start_step, check_init=mode == "adaptive")
        self.h_low, self.h_high, self.lr, self.mode = float(h_low), float(h_high), float(lr), mode

    def _frozen(self) -> bool:
        return self.mode == "constant"

    def _next(self, h: float) -> float:
        return self._value - self.lr * min(h - self.h_low, 0.0) + self.lr * min(self.h_high - h, 0.0)

    def _settings(self) -> Dict[str, Union[float, str]]:
        return {"h_low": self.h_low, "h_high": self.h_high, "lr": self.lr}


class TargetEntropyCoef(EntropyCoef):
    """TRL's adaptive entropy rule: lambda += delta if H <= target else lambda -= delta, clipped to [min, max].

    A bang-bang controller on one target entropy (TRL's use_adaptive_entropy / entropy_target /
    entropy_coef_delta), the simpler alternative to eq. 4.1's band. `tracked_entropy` is "full" (TRL's
    rule) unless the bonus it weights is the clamped one. Updates start at `start_step`, like AEnt's.
    """

    mode = "target"
    resumes_from = ("target",)

    def __init__(
        self,
        init: float,
        target: float,
        delta: float,
        min: float = 0.0,  # noqa: A002 - the config's name
        max: float = 1.0,  # noqa: A002
        start_step: int = 0,
        tracked_entropy: str = "full",
    ) -> None:
        super().__init__(init, min, max, start_step)
        if delta < 0:
            raise ValueError(f"delta={delta} must be >= 0")
        if tracked_entropy not in ("full", "clamped"):
            raise ValueError(f"tracked_entropy must be full or clamped, not {tracked_entropy!r}")
        self.target, self.delta, self.tracked_entropy = float(target), float(delta), tracked_entropy

    def _next(self, h: float) -> float:
        # TRL raises the coefficient at equality too (entropy <= target).
        return self._value + self.delta if h <= self.target else self._value - self.delta

    def _settings(self) -> Dict[str, Union[float, str]]:
        return {"target": self.target, "delta": self.delta, "tracked_entropy": self.tracked_entropy}


def build_coef(algo, steps_per_epoch: int) -> EntropyCoef:
    """The coefficient controller an `algo` config section asks for.

    `coef.start_epoch` (1-based, the paper's "updates from epoch 3") becomes the first global step of
    that epoch: (start_epoch - 1) * steps_per_epoch + 1; otherwise `coef.start_step` is used as is.
    """
    c = algo.coef
    start = c.start_step
    if c.start_epoch is not None:
        start = int(round((c.start_epoch - 1) * steps_per_epoch)) + 1
    if c.mode == "target":
        return TargetEntropyCoef(
            init=c.init, target=algo.target_entropy, delta=c.delta, min=c.min, max=c.max, start_step=start,
            tracked_entropy="clamped" if algo.bonus == "clamped" else "full",
        )
    return AdaptiveEntropyCoef(
        init=c.init, h_low=algo.h_low, h_high=algo.h_high, lr=c.lr, min=c.min, max=c.max,
        start_step=start, mode=c.mode,
    )
