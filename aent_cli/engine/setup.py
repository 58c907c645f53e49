"""Everything a training run holds, built from the config in the order that fails fast: config and
data first (cheap, user errors), then the model, optimiser, rollout backend, grader and MLflow run."""
from __future__ import annotations

import copy
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf

from aent_cli.config import compose_config
from aent_cli.config.preflight import check_response_length
from aent_cli.data.arithmetic import TEST_SIZE as ARITHMETIC_TEST_SIZE, arithmetic_problems
from aent_cli.data.problem import Problem
from aent_cli.data.prompts import render_prompt, resolve_template
from aent_cli.data.sources import load_problems
from aent_cli.data.word_problems import SPEC as WORD_PROBLEMS, held_out_size as word_test_size, word_problems
from aent_cli.engine.checkpoint import check_model_weights, load_trainer_state
from aent_cli.engine.backend import TrainingBackend
from aent_cli.engine.collectives import broadcast_object, main_first
from aent_cli.engine.deepspeed_backend import DeepSpeedBackend, require_deepspeed
from aent_cli.engine.distributed import (LOCAL, DistEnv, check_divisible, detect_env, init_distributed, local_device,
                                         shutdown)
from aent_cli.engine.resume import check_store, choose_checkpoint, resumed_config
from aent_cli.engine.silent_tracker import SilentTracker
from aent_cli.engine.torch_backend import TorchBackend
from aent_cli.errors import UserError
from aent_cli.models.loading import load_policy, resolve_device
from aent_cli.rewards import Grader
from aent_cli.rollout import build_rollout
from aent_cli.rollout.base import RolloutBackend
from aent_cli.rollout.vllm import require_vllm
from aent_cli.tracking import store
from aent_cli.tracking.console import TrainConsole
from aent_cli.tracking.train_run import TrainTracker

if TYPE_CHECKING:  # transformers is imported when the model loads, not with this module
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class RunContext:
    """How a caller (a sweep, a test) embeds a training run: parent MLflow run, extra tags, quiet."""
    parent_run_id: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    quiet: bool = False
    # The command line's overrides: on resume, a key named here counts as set even when it equals
    # the default (`resume=R algo=aent` on a GRPO run is refused, not ignored).
    overrides: Optional[List[str]] = None


def load_split(cfg: DictConfig, which: str) -> List[Problem]:
    data = cfg.data
    spec = data.train if which == "train" else data.val
    if spec == "arithmetic":
        if which == "train":
            return arithmetic_problems(data.arithmetic_train_size, cfg.trainer.seed, "train",
                                       hard_share=data.arithmetic_hard_share)
        if data.val_size > ARITHMETIC_TEST_SIZE:
            raise UserError(f"data.val_size={data.val_size}: the arithmetic test split has {ARITHMETIC_TEST_SIZE}")
        return arithmetic_problems(data.val_size, 0, "test")
    if spec == WORD_PROBLEMS:
        digits = data.word_problems_digits
        if digits not in (1, 2):
            raise UserError(f"data.word_problems_digits={digits}: 1 or 2")
        if which == "train":
            return word_problems(data.word_problems_train_size, cfg.trainer.seed, "train", digits)
        if data.val_size > word_test_size(digits):
            raise UserError(f"data.val_size={data.val_size}: the word-problem test split has {word_test_size(digits)}")
        return word_problems(data.val_size, 0, "test", digits)
    split = data.train_split if which == "train" else data.val_split
    problems = load_problems(str(spec), split=split, problem_field=data.problem_field,
                             answer_field=data.answer_field)
    return problems if which == "train" else problems[:data.val_size]


def _resume(cfg: DictConfig, context: "RunContext", world_size: int) -> tuple[DictConfig, Path, Path, dict]:
    """(config, run dir, checkpoint, trainer state) of the run `trainer.resume` names: the checks of
    engine/resume.py, all before the model loads; the store is the one the run was recorded in."""
    t = cfg.trainer
    notify = (lambda message: None) if context.quiet else (lambda message: print(message, file=sys.stderr))
    run_dir, ckpt = choose_checkpoint(t.resume, t.output_dir, bool(t.resume_fallback), notify, world_size)
    cfg, applied = resumed_config(cfg, run_dir, context.overrides, compose_config([]))
    state = load_trainer_state(ckpt)
    if "tracking.uri" not in applied and state.get("tracking_uri"):
        cfg.tracking.uri = state["tracking_uri"]
    check_store(cfg.tracking.uri or store.tracking_uri(None), state["mlflow_run_id"], t.resume)
    return cfg, run_dir, ckpt, state


def _require_optional_backends(cfg: DictConfig) -> None:
    """DeepSpeed and vLLM are optional extras: a missing one is one line, before the model loads."""
    if cfg.trainer.backend == "deepspeed":
        require_deepspeed()
    if cfg.rollout.backend == "vllm" and cfg.rollout.mode == "colocate":
        require_vllm()


@dataclass
class TrainingSetup:
    cfg: DictConfig
    run_dir: Path
    device: torch.device
    train_problems: List[Problem]
    val_problems: List[Problem]
    val_prompts: List[str]
    prompt_template: str
    model: PreTrainedModel  # the trained policy (under DeepSpeed: the engine's module)
    ref_model: Optional[PreTrainedModel]  # frozen copy for the KL term (algo.kl_coef > 0)
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    rollout: RolloutBackend
    grader: Grader
    tracker: Union[TrainTracker, SilentTracker]  # rank 0 records; the others hold a SilentTracker
    console: TrainConsole
    resume_checkpoint: Optional[Path]
    backend: TrainingBackend  # the optimiser step: torch_backend.TorchBackend or deepspeed_backend.DeepSpeedBackend
    env: DistEnv = LOCAL  # this process's rank in a torchrun / deepspeed launch
    owns_process_group: bool = False

    @classmethod
    def build(cls, cfg: DictConfig, context: Optional[RunContext] = None) -> "TrainingSetup":
        context = context or RunContext()
        env = detect_env()
        resume_ckpt, run_id = None, None
        if cfg.trainer.resume:
            cfg, run_dir, resume_ckpt, saved = _resume(cfg, context, env.world_size)
            run_id = saved["mlflow_run_id"]
        else:
            name = cfg.trainer.run_name or f"{cfg.algo.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            if Path(name).name != name or name in (".", ".."):
                raise UserError(f"trainer.run_name={name!r}: must be a plain folder name (no '/', no '..')")
            run_dir = Path(cfg.trainer.output_dir) / name
            if run_dir.exists():  # checked by every rank before any of them creates it (init_distributed waits)
                raise UserError(f"{run_dir} already exists: continue that run with resume={run_dir}, "
                                "or choose another trainer.run_name")
        train_problems = load_split(cfg, "train")
        val_problems = load_split(cfg, "val")
        if len(train_problems) < cfg.trainer.batch_size:
            raise UserError(f"data.train has {len(train_problems)} problems, fewer than "
                            f"trainer.batch_size={cfg.trainer.batch_size}")
        check_divisible(env, cfg.trainer.batch_size, cfg.trainer.mini_batch_size)
        _require_optional_backends(cfg)
        check_response_length("rollout.max_new_tokens", cfg.rollout.max_new_tokens, cfg.model)
        device = local_device(env, resolve_device(cfg.trainer.device))
        owns_group = not torch.distributed.is_initialized()
        env = init_distributed(env, device, single_process_group=cfg.trainer.backend == "deepspeed")
        owns_group = owns_group and env.world_size == 1 and torch.distributed.is_initialized()
        if resume_ckpt is None:
            run_dir = Path(cfg.trainer.output_dir) / broadcast_object(run_dir.name, env)  # one name for all ranks

        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        random.seed(cfg.trainer.seed)
        torch.manual_seed(cfg.trainer.seed)
        console = TrainConsole(quiet=context.quiet or not env.is_main)
        with main_first(env):  # rank 0 builds the tiny model's cache, the others then read it
            model, tokenizer = load_policy(cfg.model, device, progress_factory=console.warmstart_progress)
        if resume_ckpt is not None:  # names and shapes, before any run state changes
            check_model_weights(resume_ckpt, model)
        # the same start whether or not the warm start just ran; ranks sample different rollouts
        torch.manual_seed(cfg.trainer.seed + env.rank)
        template = resolve_template(cfg.model.prompt_template, tokenizer)
        val_prompts = [render_prompt(p.problem, template, tokenizer) for p in val_problems]
        ref_model = None
        if cfg.algo.kl_coef > 0:
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        t = cfg.trainer
        # the fused kernel: one pass over all parameters instead of a dozen small ops per tensor
        fused = t.backend == "torch" and device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                                      fused=fused or None)
        if t.backend == "deepspeed":
            backend = DeepSpeedBackend(model, optimizer, t, env, device)
            optimizer = backend.optimizer
        else:
            backend = TorchBackend(model, optimizer, env)
        rollout = build_rollout(cfg.rollout, model, tokenizer)
        grader = Grader.from_config(cfg.reward)
        grader.start()  # math-verify warms up in its processes while the run is set up

        run_dir.mkdir(parents=True, exist_ok=True)
        if env.is_main:  # rank 0 alone writes the config and records to MLflow
            if resume_ckpt is None:
                (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            tracker = TrainTracker(cfg, run_dir, run_id=run_id, parent_run_id=context.parent_run_id,
                                   tags=context.tags)
        run_id = broadcast_object(tracker.run_id if env.is_main else None, env)
        if not env.is_main:
            tracker = SilentTracker(run_id)
        return cls(cfg, run_dir, device, train_problems, val_problems, val_prompts, template, model, ref_model,
                   tokenizer, optimizer, rollout, grader, tracker, console, resume_ckpt, backend, env, owns_group)

    def close(self) -> None:
        self.grader.close()
        self.rollout.close()
        if self.backend is not None:
            self.backend.close()
        if self.owns_process_group:
            shutdown()
