"""Range checks that types alone cannot express. Each failure names the key, the value and the range.
Also: every float is finite, and every config key is one MLflow can record as a param."""
from __future__ import annotations

import math
import posixpath
import re
from typing import Any, Iterator, Tuple

from omegaconf import DictConfig, OmegaConf

from aent_cli.errors import ConfigError

_CHOICES = {
    "algo.advantage": ("grpo", "drgrpo"),
    "algo.policy_loss": ("ppo_clip", "reinforce", "clip_cov", "kl_cov", "high_entropy_mask"),
    "algo.loss_agg": ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"),
    "algo.bonus": ("none", "full", "clamped"),
    "algo.coef.mode": ("adaptive", "constant", "target"),
    "algo.kl_estimator": ("k1", "k3"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "model.prompt_template": ("auto", "qwen_boxed", "chat", "plain"),
    "rollout.backend": ("hf", "vllm"),
    "rollout.mode": ("colocate", "server"),
    "reward.extractor": (None, "strict", "auto", "last_number"),  # null: train strict, eval auto
    "reward.percent": ("scale", "number"),
    "trainer.device": ("auto", "cpu", "cuda"),
    "trainer.backend": ("torch", "deepspeed"),
}


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


def validate(cfg: DictConfig) -> DictConfig:
    """Raise ConfigError on the first out-of-range value; return cfg unchanged otherwise."""
    _check_keys_and_floats(cfg)
    for key, choices in _CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            _fail(key, value, "one of " + ", ".join("null" if c is None else c for c in choices))

    a, c, t, r = cfg.algo, cfg.algo.coef, cfg.trainer, cfg.rollout
    if not 0.0 <= a.p < 1.0:
        _fail("algo.p", a.p, "0 <= p < 1")
    if a.h_low > a.h_high:
        _fail("algo.h_low", a.h_low, f"h_low <= h_high (algo.h_high={a.h_high})")
    if a.h_low < 0:
        _fail("algo.h_low", a.h_low, ">= 0")
    if c.init < 0:
        _fail("algo.coef.init", c.init, ">= 0")
    if c.mode in ("adaptive", "target"):
        if c.min < 0:
            _fail("algo.coef.min", c.min, ">= 0")
        if not c.min <= c.init <= c.max:
            _fail("algo.coef.init", c.init, f"coef.min <= init <= coef.max ([{c.min}, {c.max}])")
    if c.lr < 0:
        _fail("algo.coef.lr", c.lr, ">= 0")
    if c.start_step < 0:
        _fail("algo.coef.start_step", c.start_step, ">= 0")
    if c.start_epoch is not None and c.start_epoch < 0:
        _fail("algo.coef.start_epoch", c.start_epoch, ">= 0")
    for key in ("clip_eps_low", "clip_eps_high"):
        if a[key] <= 0:
            _fail(f"algo.{key}", a[key], "> 0")
    if a.dual_clip_c is not None and a.dual_clip_c <= 1:
        _fail("algo.dual_clip_c", a.dual_clip_c, "> 1 (or null to disable)")
    if a.adv_eps <= 0:
        _fail("algo.adv_eps", a.adv_eps, "> 0")
    if a.kl_coef < 0:
        _fail("algo.kl_coef", a.kl_coef, ">= 0")
    for key in ("cov_ratio", "kl_cov_ratio", "entropy_mask_rho"):
        if not 0 < a[key] <= 1:
            _fail(f"algo.{key}", a[key], "a fraction in (0, 1]")
    if a.cov_clip_lower >= a.cov_clip_upper:
        _fail("algo.cov_clip_lower", a.cov_clip_lower, f"< algo.cov_clip_upper={a.cov_clip_upper}")
    if a.kl_cov_coef < 0:
        _fail("algo.kl_cov_coef", a.kl_cov_coef, ">= 0")
    if a.target_entropy < 0:
        _fail("algo.target_entropy", a.target_entropy, ">= 0 (nats)")
    if c.delta < 0:
        _fail("algo.coef.delta", c.delta, ">= 0")
    if c.mode == "target" and a.bonus == "none":
        _fail("algo.coef.mode", c.mode, "target needs an entropy bonus (algo.bonus=full or clamped)")

    if r.n < 2:
        _fail("rollout.n", r.n, "group size >= 2")
    if r.temperature <= 0:
        _fail("rollout.temperature", r.temperature, "> 0")
    if not 0 < r.top_p <= 1:
        _fail("rollout.top_p", r.top_p, "0 < top_p <= 1")
    if r.top_k == 0 or r.top_k < -1:
        _fail("rollout.top_k", r.top_k, "-1 (off) or >= 1")
    if r.max_new_tokens < 1:
        _fail("rollout.max_new_tokens", r.max_new_tokens, ">= 1")

    for key in ("steps", "batch_size", "mini_batch_size", "micro_batch_size", "ppo_epochs", "val_n"):
        if t[key] < 1:
            _fail(f"trainer.{key}", t[key], ">= 1")
    if t.batch_size % t.mini_batch_size:
        _fail("trainer.mini_batch_size", t.mini_batch_size, f"a divisor of trainer.batch_size={t.batch_size}")
    if t.lr < 0:
        _fail("trainer.lr", t.lr, ">= 0")
    if t.grad_clip <= 0:
        _fail("trainer.grad_clip", t.grad_clip, "> 0")
    if t.zero_stage not in (0, 1, 2, 3):
        _fail("trainer.zero_stage", t.zero_stage, "0, 1, 2 or 3")
    if t.bf16 and t.backend != "deepspeed":
        _fail("trainer.bf16", t.bf16, "only with trainer.backend=deepspeed (torch backend: model.dtype=bfloat16)")
    if t.cpu_offload and (t.backend != "deepspeed" or t.zero_stage == 0):
        _fail("trainer.cpu_offload", t.cpu_offload, "only with trainer.backend=deepspeed and trainer.zero_stage >= 1")
    for key in ("val_every", "checkpoint_every", "threads", "micro_batch_tokens"):
        if t[key] < 0:
            _fail(f"trainer.{key}", t[key], ">= 0")
    if t.keep_checkpoints < 1:
        _fail("trainer.keep_checkpoints", t.keep_checkpoints, ">= 1")
    if not 0.0 <= t.entropy_collapse_fraction < 1.0:
        _fail("trainer.entropy_collapse_fraction", t.entropy_collapse_fraction, "0 <= fraction < 1 (0 = off)")

    if cfg.reward.timeout_s <= 0:
        _fail("reward.timeout_s", cfg.reward.timeout_s, "> 0")
    if not 0 <= cfg.reward.workers <= MAX_GRADING_WORKERS:
        _fail("reward.workers", cfg.reward.workers, f"0 (auto) to {MAX_GRADING_WORKERS}")
    if cfg.model.logit_chunk < 1:
        _fail("model.logit_chunk", cfg.model.logit_chunk, ">= 1")
    if not 0.0 <= cfg.data.arithmetic_hard_share <= 1.0:
        _fail("data.arithmetic_hard_share", cfg.data.arithmetic_hard_share, "0 <= share <= 1")
    if cfg.data.val_size < 0:
        _fail("data.val_size", cfg.data.val_size, ">= 0")

    e = cfg.eval
    if e.k < 1:
        _fail("eval.k", e.k, ">= 1")
    if e.temperature < 0:
        _fail("eval.temperature", e.temperature, ">= 0 (0 = greedy)")
    if not 0 < e.top_p <= 1:
        _fail("eval.top_p", e.top_p, "0 < top_p <= 1")
    if e.limit is not None and e.limit < 1:
        _fail("eval.limit", e.limit, ">= 1 or null")
    if e.top_k == 0 or e.top_k < -1:
        _fail("eval.top_k", e.top_k, "-1 (off) or >= 1")
    for key in ("max_new_tokens", "batch_size"):
        if e[key] < 1:
            _fail(f"eval.{key}", e[key], ">= 1")
    if e.checkpoint not in ("best", "final", "all"):
        _fail("eval.checkpoint", e.checkpoint, "one of best, final, all")
    return cfg
