"""The values each name-selecting key accepts, read from the registry that owns the names.

A new loss, advantage estimator, aggregation, KL estimator, entropy bonus, answer extractor, prompt
template, dtype, rollout backend or eval checkpoint choice is one edit: registering it where it is defined. The few keys with no
registry behind them (a closed set of modes) are listed in `_FIXED`.
"""
from __future__ import annotations

import functools
from typing import Dict, Tuple

from aent_cli.algos.registry import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES
from aent_cli.data.prompts import TEMPLATES
from aent_cli.eval.targets import CHECKPOINT_CHOICES
from aent_cli.rewards.extract import EXTRACTORS
from aent_cli.rewards.normalize import PERCENT_MODES
from aent_cli.rollout import BACKENDS

# Keys whose values are a closed set of modes read by `if` in one place each (no registry to derive from).
_FIXED: Dict[str, Tuple] = {
    "algo.coef.mode": ("adaptive", "constant", "target"),  # algos/coef.py build_coef
    "rollout.mode": ("colocate", "server"),  # rollout/vllm.py
    "trainer.device": ("auto", "cpu", "cuda"),  # models/loading.py resolve_device
    "trainer.backend": ("torch", "deepspeed"),  # engine/setup.py
}


@functools.lru_cache(maxsize=None)
def choices() -> Dict[str, Tuple]:
    """{dotted key: allowed values}; None in a tuple means null is allowed.

    Imports the registries' modules (and so torch, a few seconds cold): called by `validate`, after the
    cheap checks of compose, never at import time, so `aent --help` stays fast.
    """
    # torch: importing these fills the algos registries (each function registers itself by name).
    import aent_cli.algos.advantages  # noqa: F401
    from aent_cli.algos.objective import BONUS_ENTROPY
    from aent_cli.models.loading import DTYPES

    return {
        "algo.advantage": tuple(ADVANTAGES),
        "algo.policy_loss": tuple(POLICY_LOSSES),
        "algo.loss_agg": tuple(AGGREGATIONS),
        "algo.bonus": ("none",) + tuple(BONUS_ENTROPY),
        "algo.kl_estimator": tuple(KL_ESTIMATORS),
        "model.dtype": ("auto",) + tuple(DTYPES),
        "model.prompt_template": tuple(TEMPLATES),
        "rollout.backend": tuple(BACKENDS),
        "reward.extractor": (None,) + tuple(EXTRACTORS),  # null: strict for `aent train`, auto for `aent eval`
        "reward.percent": tuple(PERCENT_MODES),
        "eval.checkpoint": tuple(CHECKPOINT_CHOICES),
        **_FIXED,
    }
