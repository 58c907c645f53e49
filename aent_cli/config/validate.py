"""Checks that types alone cannot express. Each failure names the key, the value and what is allowed:
the choices of name-selecting keys (derived from the registries, config/choices.py), one range per key
(the RANGES table), the rules that tie keys together (`_relations`), every float finite, and every
config key one MLflow can record as a param."""
from __future__ import annotations

import math
import posixpath
import re
from typing import Any, Callable, Dict, Iterator, Tuple

from omegaconf import DictConfig, OmegaConf

from aent_cli.config.choices import choices
from aent_cli.errors import ConfigError


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _fail(key: str, value, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is out of range: {allowed}")


# MLflow's rule for param and metric names (mlflow.utils.validation, POSIX): these characters, a
# normalised relative path, at most 250 characters. Checked here so a bad key (`notes={lr@bs:1}`) is
# one line and exit 2 before any run exists, not an MlflowException half-way through logging params.
MAX_GRADING_WORKERS = 64  # grading processes; more than this only thrashes a machine
# Sizes past these are typos (a group of 10^8 responses is a 1.6 TB sampler buffer), refused before any work.
MAX_GROUP = 4096  # rollout.n and eval.k: responses per prompt
MAX_STEPS = 10_000_000
_MLFLOW_KEY = re.compile(r"^[/\w.\- :]*$")
_MLFLOW_KEY_MAX = 250


def mlflow_key_problem(key: str) -> str:
    """Why MLflow would reject `key` as a param / metric name ("" when it accepts it)."""
    if not _MLFLOW_KEY.match(key):
        return "MLflow keys may only contain letters, digits, _ - . : / and spaces"
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith("..") or norm.startswith("/"):
        return "MLflow keys must be plain relative paths (no leading /, no //, no . or .. parts)"
    if len(key) > _MLFLOW_KEY_MAX:
        return f"MLflow keys are at most {_MLFLOW_KEY_MAX} characters"
    return ""


def _leaves(node: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """(dotted key, value) for every leaf of a plain container; list items as key[i] (values only)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{prefix[:-1]}[{i}].")
    else:
        yield prefix[:-1], node


def _check_keys_and_floats(cfg: DictConfig) -> None:
    data = OmegaConf.to_container(cfg, resolve=True)
    for key, value in _leaves(data):
        if "[" not in key:  # list items are one param (the list as text)
            problem = mlflow_key_problem(key)
            if problem:
                raise ConfigError(f"config key {key!r} cannot be recorded: {problem}; rename it")
        if key.startswith("notes.") or key == "notes":
            continue  # free-form text for people
        if isinstance(value, float) and not math.isfinite(value):
            _fail(key, value, "a finite number")


# key -> (test, the allowed range as the error says it). A null value (an optional key left unset) passes.
Check = Tuple[Callable[[Any], bool], str]


def _at_least(bound: int) -> Check:
    return (lambda v: v >= bound), f">= {bound}"


def _above(bound: int) -> Check:
    return (lambda v: v > bound), f"> {bound}"


_FRACTION: Check = (lambda v: 0 < v <= 1), "a fraction in (0, 1]"
_TOP_P: Check = (lambda v: 0 < v <= 1), "0 < top_p <= 1"
_TOP_K: Check = (lambda v: v == -1 or v >= 1), "-1 (off) or >= 1"

RANGES: Dict[str, Check] = {
    "algo.adv_eps": _above(0),
    "algo.clip_eps_low": _above(0),
    "algo.clip_eps_high": _above(0),
    "algo.dual_clip_c": ((lambda v: v > 1), "> 1 (or null to disable)"),
    "algo.p": ((lambda v: 0.0 <= v < 1.0), "0 <= p < 1"),
    "algo.h_low": _at_least(0),
    "algo.coef.init": _at_least(0),
    "algo.coef.lr": _at_least(0),
    "algo.coef.start_step": _at_least(0),
    "algo.coef.start_epoch": _at_least(0),
    "algo.coef.delta": _at_least(0),
    "algo.kl_coef": _at_least(0),
    "algo.cov_ratio": _FRACTION,
    "algo.kl_cov_ratio": _FRACTION,
    "algo.entropy_mask_rho": _FRACTION,
    "algo.kl_cov_coef": _at_least(0),
    "algo.target_entropy": ((lambda v: v >= 0), ">= 0 (nats)"),
    "model.logit_chunk": _at_least(1),
    "data.val_size": _at_least(0),
    "data.arithmetic_hard_share": ((lambda v: 0.0 <= v <= 1.0), "0 <= share <= 1"),
    "rollout.n": ((lambda v: 2 <= v <= MAX_GROUP), f"a group size from 2 to {MAX_GROUP}"),
    "rollout.temperature": _above(0),
    "rollout.top_p": _TOP_P,
    "rollout.top_k": _TOP_K,
    "rollout.max_new_tokens": _at_least(1),
    "reward.timeout_s": _above(0),
    "reward.workers": ((lambda v: 0 <= v <= MAX_GRADING_WORKERS), f"0 (auto) to {MAX_GRADING_WORKERS}"),
    **{f"trainer.{key}": _at_least(1) for key in (
        "batch_size", "mini_batch_size", "micro_batch_size", "ppo_epochs", "val_n", "keep_checkpoints")},
    **{f"trainer.{key}": _at_least(0) for key in ("val_every", "checkpoint_every", "threads", "micro_batch_tokens")},
    "trainer.steps": ((lambda v: 1 <= v <= MAX_STEPS), f"1 to {MAX_STEPS:,}"),
    "trainer.stop_after": ((lambda v: v >= 1), ">= 1: the last step to run (null = run to trainer.steps)"),
    "trainer.lr": _at_least(0),
    "trainer.grad_clip": _above(0),
    "trainer.zero_stage": ((lambda v: v in (0, 1, 2, 3)), "0, 1, 2 or 3"),
    "trainer.entropy_collapse_fraction": ((lambda v: 0.0 <= v < 1.0), "0 <= fraction < 1 (0 = off)"),
    "eval.k": ((lambda v: 1 <= v <= MAX_GROUP), f"1 to {MAX_GROUP} samples per problem"),
    "eval.temperature": ((lambda v: v >= 0), ">= 0 (0 = greedy)"),
    "eval.top_p": _TOP_P,
    "eval.top_k": _TOP_K,
    "eval.limit": ((lambda v: v >= 1), ">= 1 or null"),
    "eval.max_new_tokens": _at_least(1),
    "eval.batch_size": _at_least(1),
}


def _relations(cfg: DictConfig) -> Iterator[Tuple[bool, str, Any, str]]:
    """(holds?, key, value, allowed) for the rules that tie keys together, in the order they are checked."""
    a, c, t = cfg.algo, cfg.algo.coef, cfg.trainer
    steered = c.mode in ("adaptive", "target")  # a constant coefficient has no range to stay in
    yield a.h_low <= a.h_high, "algo.h_low", a.h_low, f"h_low <= h_high (algo.h_high={a.h_high})"
    yield not steered or c.min >= 0, "algo.coef.min", c.min, ">= 0"
    yield (not steered or c.min <= c.init <= c.max, "algo.coef.init", c.init,
           f"coef.min <= init <= coef.max ([{c.min}, {c.max}])")
    yield (a.cov_clip_lower < a.cov_clip_upper, "algo.cov_clip_lower", a.cov_clip_lower,
           f"< algo.cov_clip_upper={a.cov_clip_upper}")
    yield (c.mode != "target" or a.bonus != "none", "algo.coef.mode", c.mode,
           "target needs an entropy bonus (algo.bonus=full or clamped)")
    yield (t.batch_size % t.mini_batch_size == 0, "trainer.mini_batch_size", t.mini_batch_size,
           f"a divisor of trainer.batch_size={t.batch_size}")
    yield (not t.bf16 or t.backend == "deepspeed", "trainer.bf16", t.bf16,
           "only with trainer.backend=deepspeed (torch backend: model.dtype=bfloat16)")
    yield (not t.cpu_offload or (t.backend == "deepspeed" and t.zero_stage > 0), "trainer.cpu_offload",
           t.cpu_offload, "only with trainer.backend=deepspeed and trainer.zero_stage >= 1")
    yield (t.resume is None or str(t.resume).strip() != "", "trainer.resume", t.resume,
           "a run folder, one of its checkpoints, or latest (an empty shell variable? null starts a new run)")


def validate(cfg: DictConfig) -> DictConfig:
    """Raise ConfigError on the first value out of its range (RANGES), its relation to another key or
    its choices (config/choices.py); return cfg unchanged otherwise. The choices come last: reading the
    registries imports torch (seconds on a busy machine), so a range error is reported without it."""
    _check_keys_and_floats(cfg)
    for key, (holds, allowed) in RANGES.items():
        value = _get(cfg, key)
        if value is not None and not holds(value):
            _fail(key, value, allowed)
    for holds, key, value, allowed in _relations(cfg):
        if not holds:
            _fail(key, value, allowed)
    for key, allowed in choices().items():
        value = _get(cfg, key)
        if value not in allowed:
            _fail(key, value, "one of " + ", ".join("null" if c is None else c for c in allowed))
    return cfg
