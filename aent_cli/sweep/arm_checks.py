"""Warnings for an ablation whose arms cannot differ: printed before any job runs, so a user does not
spend the run time to get identical curves (e.g. `aent ablate coef trainer.steps=3` when lambda's
first update is at step 5: adaptive and constant lambda train the same model)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

# Keys that name or place a run without changing what it trains.
_NOT_TRAINING = ("trainer.run_name", "trainer.output_dir", "trainer.resume", "trainer.stop_after", "tracking",
                 "eval", "notes", "trainer.checkpoint_every", "trainer.keep_checkpoints", "trainer.threads")


def coef_start_step(cfg: DictConfig, train_size: int) -> Optional[int]:
    """The global step of lambda's first update (the value it sets is used from the next step on),
    as `build_coef` computes it from coef.start_step or coef.start_epoch; None when it depends on a
    train-set size that is not known (train_size 0)."""
    c = cfg.algo.coef
    if c.start_epoch is None:
        return int(c.start_step)
    if not train_size:
        return None
    steps_per_epoch = train_size // cfg.trainer.batch_size  # as QuerySampler: the ragged tail is dropped
    return int(round((c.start_epoch - 1) * steps_per_epoch)) + 1


def _training_view(cfg: DictConfig) -> Dict:
    data = OmegaConf.to_container(cfg, resolve=False)
    for key in _NOT_TRAINING:
        node, *rest = key.split(".")
        if rest:
            data.get(node, {}).pop(rest[0], None)
        else:
            data.pop(node, None)
    return data


def _lambda_static(cfg: DictConfig, train_size: int) -> str:
    """Why lambda never changes in this run (empty when it can change)."""
    a, t = cfg.algo, cfg.trainer
    if a.bonus == "none":
        return "algo.bonus=none (no entropy term for lambda to weight)"
    if a.coef.mode == "constant":
        return "algo.coef.mode=constant"
    start = coef_start_step(cfg, train_size)
    if start is not None and t.steps <= start:
        return (f"trainer.steps={t.steps} ends before lambda's first update is used "
                f"(update at step {start}, algo.coef.start_step/start_epoch)")
    if a.coef.mode == "adaptive" and a.coef.lr == 0:
        return "algo.coef.lr=0"
    return ""


def identical_arm_warnings(labels: Sequence[str], configs: Sequence[DictConfig], train_size: int = 0) -> List[str]:
    """One line per reason the compared arms would train identically: two jobs with the same training
    config, or (the coefficient ablation) lambda static in every arm that differs only in coef.mode."""
    out = []
    views = [_training_view(cfg) for cfg in configs]
    for i in range(len(configs)):
        for j in range(i + 1, len(configs)):
            if views[i] == views[j]:
                out.append(f"jobs '{labels[i]}' and '{labels[j]}' have the same training config: "
                           "their runs will be identical")
    modes = {cfg.algo.coef.mode for cfg in configs}
    if len(modes) > 1:
        static = [_lambda_static(cfg, train_size) for cfg in configs]
        adaptive = [(label, why) for label, cfg, why in zip(labels, configs, static)
                    if cfg.algo.coef.mode != "constant"]
        if adaptive and all(why for _, why in adaptive):
            label, why = adaptive[0]
            out.append(f"job '{label}': lambda never changes ({why}), so the arms that differ in "
                       "algo.coef.mode train identically")
    return out
