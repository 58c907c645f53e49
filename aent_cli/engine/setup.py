"""Everything a training run holds, built from the config in the order that fails fast: config and
data first (cheap, user errors), then the model, optimiser, rollout backend, grader and MLflow run."""
from __future__ import annotations

import copy
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from aent_cli.data.arithmetic import arithmetic_problems
from aent_cli.data.problem import Problem
from aent_cli.data.prompts import render_prompt, resolve_template
from aent_cli.data.sources import load_problems
from aent_cli.data.word_problems import SPEC as WORD_PROBLEMS, held_out_size as word_test_size, word_problems
from aent_cli.engine.checkpoint import find_run_dir, latest_checkpoint, load_trainer_state
from aent_cli.engine.distributed import (LOCAL, DistEnv, SilentTracker, TorchBackend, broadcast_object,
                                         check_divisible, detect_env, init_distributed, local_device, main_first,
                                         shutdown)
from aent_cli.errors import UserError
from aent_cli.models.loading import load_policy, resolve_device
from aent_cli.rewards import Grader
from aent_cli.rollout import build_rollout
from aent_cli.tracking.console import TrainConsole
from aent_cli.tracking.train_run import TrainTracker


@dataclass
class RunContext:
    """How a caller (a sweep, a test) embeds a training run: parent MLflow run, extra tags, quiet."""
    parent_run_id: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    quiet: bool = False


def load_split(cfg: DictConfig, which: str) -> List[Problem]:
    data = cfg.data
    spec = data.train if which == "train" else data.val
    if spec == "arithmetic":
        if which == "train":
            return arithmetic_problems(data.arithmetic_train_size, cfg.trainer.seed, "train",
                                       hard_share=data.arithmetic_hard_share)
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


def _resumed_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """The saved config of the run being resumed; only how far to train may change."""
    run_dir = find_run_dir(cfg.trainer.resume, cfg.trainer.output_dir)
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        raise UserError(f"resume={cfg.trainer.resume}: {saved_file} is missing")
    saved = OmegaConf.merge(cfg, OmegaConf.load(saved_file))  # typed: the schema checks the file
    saved.trainer.steps = cfg.trainer.steps
    saved.trainer.stop_after = cfg.trainer.stop_after
    saved.trainer.resume = cfg.trainer.resume
    return saved, run_dir


def _require_optional_backends(cfg: DictConfig) -> None:
    """DeepSpeed and vLLM are optional extras: a missing one is one line, before the model loads."""
    if cfg.trainer.backend == "deepspeed":
        from aent_cli.engine.deepspeed_backend import require_deepspeed

        require_deepspeed()
    if cfg.rollout.backend == "vllm" and cfg.rollout.mode == "colocate":
        from aent_cli.rollout.vllm import require_vllm

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
    model: object
    ref_model: Optional[object]
    tokenizer: object
    optimizer: torch.optim.Optimizer
    rollout: object
    grader: Grader
    tracker: TrainTracker
    console: TrainConsole
    resume_checkpoint: Optional[Path]
    backend: object = None  # the optimiser step: distributed.TorchBackend or deepspeed_backend.DeepSpeedBackend
    env: DistEnv = LOCAL  # this process's rank in a torchrun / deepspeed launch
    owns_process_group: bool = False

    @classmethod
    def build(cls, cfg: DictConfig, context: Optional[RunContext] = None) -> "TrainingSetup":
        context = context or RunContext()
        env = detect_env()
        resume_ckpt, run_id = None, None
        if cfg.trainer.resume:
            cfg, run_dir = _resumed_config(cfg)
            resume_ckpt = latest_checkpoint(run_dir)
            saved = load_trainer_state(resume_ckpt)
            run_id = saved["mlflow_run_id"]
            if int(saved.get("world_size", 1)) != env.world_size:
                raise UserError(f"resume={cfg.trainer.resume}: the checkpoint was written by "
                                f"{saved.get('world_size', 1)} process(es), this launch has {env.world_size}; "
                                "resume with the same world size")
        else:
            name = cfg.trainer.run_name or f"{cfg.algo.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            run_dir = Path(cfg.trainer.output_dir) / name
        train_problems = load_split(cfg, "train")
        val_problems = load_split(cfg, "val")
        if len(train_problems) < cfg.trainer.batch_size:
            raise UserError(f"data.train has {len(train_problems)} problems, fewer than "
                            f"trainer.batch_size={cfg.trainer.batch_size}")
        check_divisible(env, cfg.trainer.batch_size, cfg.trainer.mini_batch_size)
        _require_optional_backends(cfg)
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
            from aent_cli.engine.deepspeed_backend import DeepSpeedBackend

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
