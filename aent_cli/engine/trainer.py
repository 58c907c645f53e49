"""Algorithm 1 of the AEnt paper, one global step at a time:
1. pi_b = the current policy; 2. sample a batch of queries and G responses each, grade them;
3. optimise L_PO + lambda * bonus for the configured mini-epochs; 4. update lambda (eq. 4.1).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from omegaconf import DictConfig

from aent_cli.algos.advantages import ADVANTAGES
from aent_cli.algos.collapse import EntropyCollapseAlarm
from aent_cli.algos.coef import EntropyCoef, build_coef
from aent_cli.algos.registry import lookup
from aent_cli.data.prompts import render_prompt
from aent_cli.engine.collectives import all_reduce_sum, shard, shard_uneven
from aent_cli.engine.sampler import QuerySampler, take
from aent_cli.engine.setup import RunContext, TrainingSetup
from aent_cli.engine.update import StepBatch, UpdateSettings, measure, optimise
from aent_cli.eval.runner import evaluate_problems
from aent_cli.models.logprobs import pack_sequences
from aent_cli.rollout import SamplingParams
from aent_cli.tracking.tags import ENTROPY_COLLAPSE_STEP

VAL_SEED = 1234


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    final_model_dir: Path
    steps: int
    history: List[Dict[str, float]] = field(default_factory=list)  # per-step metrics, this process
    val: Dict[int, float] = field(default_factory=dict)


def _val_accuracy(setup: TrainingSetup) -> float:
    """val/acc with the eval sampling parameters, on a forked RNG so validation never changes the
    training trajectory (a run validated more often samples the same rollouts)."""
    cfg = setup.cfg
    params = SamplingParams(n=cfg.trainer.val_n, temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
                            top_k=cfg.eval.top_k, max_new_tokens=cfg.rollout.max_new_tokens)
    env = setup.env  # each rank scores its share of the problems
    problems, prompts = shard_uneven(setup.val_problems, env), shard_uneven(setup.val_prompts, env)
    acc = 0.0
    with torch.random.fork_rng(devices=[]), setup.backend.generation_context():
        torch.manual_seed(VAL_SEED + env.rank)
        if problems:
            acc = evaluate_problems(setup.rollout, problems, prompts, params, setup.grader,
                                    batch_size=cfg.eval.batch_size).scores[f"avg@{cfg.trainer.val_n}"]
    if not env.active:
        return acc
    total, count = all_reduce_sum([acc * len(problems), len(problems)], env)
    return total / max(count, 1.0)


def train_step(setup: TrainingSetup, coef: EntropyCoef, sampler: QuerySampler, step: int) -> Dict[str, float]:
    cfg, algo, tok = setup.cfg, setup.cfg.algo, setup.tokenizer
    started = time.perf_counter()
    problems = take(setup.train_problems, shard(sampler.next_batch(), setup.env))  # this rank's groups
    prompts = [render_prompt(p.problem, setup.prompt_template, tok) for p in problems]
    group = cfg.rollout.n
    params = SamplingParams(n=group, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                            top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_new_tokens)
    with setup.backend.generation_context():
        generated = setup.rollout.generate(prompts, params)
    t_rollout = time.perf_counter()

    completions = [c for g in generated for c in g.completions]
    answers = [p.answer for p in problems for _ in range(group)]
    updates_per_step = cfg.trainer.ppo_epochs * (cfg.trainer.batch_size // cfg.trainer.mini_batch_size)
    settings = UpdateSettings.from_config(cfg, setup.env.world_size)
    old, ref_logp = None, None
    # grading (in the grader's processes) overlaps packing and the old / reference log-prob passes,
    # which need no reward; timing/reward_s is what the trainer then still waits for it
    with ThreadPoolExecutor(max_workers=1) as pool:
        grading = pool.submit(setup.grader.grade, [c.text for c in completions], answers)
        batch = pack_sequences([g.prompt_ids for g in generated for _ in g.completions],
                               [c.token_ids for c in completions], tok.pad_token_id,
                               group_index=[i for i, g in enumerate(generated) for _ in g.completions]).to(setup.device)
        if updates_per_step > 1:
            old = measure(setup.model, batch, settings, algo.p, backend=setup.backend)
        if algo.kl_coef > 0:
            ref_logp = measure(setup.ref_model, batch, settings, algo.p)["logp"]
        t_old = time.perf_counter()
        graded = grading.result()
    rewards = torch.tensor(graded.rewards, dtype=torch.float32)
    estimator = lookup(ADVANTAGES, algo.advantage, "advantage estimator")
    advantages = estimator(rewards, batch.group_index.cpu(), algo.adv_eps).to(setup.device)
    t_reward = time.perf_counter()

    update = optimise(setup.model, setup.backend, algo, StepBatch(batch, advantages, old, ref_logp), coef.value,
                      settings)
    measured = update.measured or old
    if getattr(setup.rollout, "needs_weight_sync", False):  # an engine with its own copy (vllm)
        with setup.backend.generation_context():
            setup.rollout.sync_weights(setup.model)
    t_update = time.perf_counter()

    # sums over all ranks: token-weighted entropies (every rank then takes the same lambda step)
    # and batch metrics as one process would compute them on the whole batch
    mask = batch.response_mask
    (ent_sum, clamped_sum, n_tokens, reward_sum, n_correct, n_completions, n_cut, timeouts) = all_reduce_sum(
        [(measured["entropy"] * mask).sum(), (measured["clamped_entropy"] * mask).sum(), mask.sum(),
         rewards.sum(), sum(graded.correct), len(completions), sum(not c.finished for c in completions),
         graded.timeouts], setup.env)
    entropy, clamped = ent_sum / max(n_tokens, 1.0), clamped_sum / max(n_tokens, 1.0)
    lam_used = coef.value if algo.bonus != "none" else 0.0  # a preset may set coef.init for every algo
    coef.update(clamped if coef.tracked_entropy == "clamped" else entropy, step)
    elapsed = time.perf_counter() - started
    metrics = {
        "reward/mean": reward_sum / n_completions,
        "acc/train": n_correct / n_completions,
        "response_length/mean": n_tokens / n_completions,
        "response_length/clip_ratio": n_cut / n_completions,
        "actor/entropy": entropy,
        "actor/clamped_entropy": clamped,
        "actor/entropy_coef": lam_used,
        "actor/entropy_coef_next": coef.value,
        "reward/grade_timeouts": timeouts,
        "perf/step_time_s": elapsed,
        "perf/tokens_per_s": n_tokens / elapsed,
        "timing/rollout_s": t_rollout - started,
        "timing/reward_s": t_reward - t_old,
        "timing/old_logp_s": t_old - t_rollout,
        "timing/update_s": t_update - t_reward,
    }
    for key, value in update.stats.items():
        metrics[f"actor/{key}"] = value
    return metrics


def run_training(cfg: DictConfig, context: Optional[RunContext] = None) -> TrainResult:
    """Train per `cfg`, recording to MLflow; resumes when cfg.trainer.resume is set."""
    setup = TrainingSetup.build(cfg, context)
    try:
        return _loop(setup)
    except KeyboardInterrupt:
        setup.tracker.end("KILLED")
        raise
    except BaseException:
        setup.tracker.end("FAILED")
        raise
    finally:
        setup.close()


def _loop(setup: TrainingSetup) -> TrainResult:
    cfg, t = setup.cfg, setup.cfg.trainer
    sampler = QuerySampler(len(setup.train_problems), t.batch_size, t.seed, cfg.data.shuffle)
    coef = build_coef(cfg.algo, sampler.steps_per_epoch)
    alarm = EntropyCollapseAlarm(t.entropy_collapse_fraction)
    start_step = 0
    if setup.resume_checkpoint is not None:
        state = setup.backend.restore_checkpoint(setup.resume_checkpoint)
        coef.load_state_dict(state["coef"])
        sampler.load_state_dict(state["sampler"])
        alarm.load_state_dict(state.get("entropy_alarm", {}))
        start_step = int(state["step"])
    result = TrainResult(setup.tracker.run_id, setup.run_dir, setup.run_dir / "final", t.steps)

    def checkpoint(step: int) -> None:
        setup.tracker.flush()
        setup.backend.save_checkpoint(setup.run_dir, step, setup.tokenizer,
                                      {"coef": coef.state_dict(), "sampler": sampler.state_dict(),
                                       "entropy_alarm": alarm.state_dict(), "mlflow_run_id": setup.tracker.run_id,
                                       "tracking_uri": getattr(setup.tracker, "uri", None)}, t.keep_checkpoints)

    if start_step == 0 and t.val_every > 0 and setup.val_problems:
        acc = _val_accuracy(setup)
        result.val[0] = acc
        setup.tracker.log({"val/acc": acc}, 0)

    last = min(t.steps, t.stop_after) if t.stop_after is not None else t.steps
    with setup.console.progress(total=t.steps, completed=start_step) as progress:
        for step in range(start_step + 1, last + 1):
            metrics = train_step(setup, coef, sampler, step)
            collapse = alarm.update(metrics["actor/entropy"], step)
            if collapse == collapse:  # not NaN: both windows are full
                metrics["actor/entropy_collapse"] = collapse
            if alarm.just_tripped(step):
                setup.console.entropy_collapse(step, collapse, t.entropy_collapse_fraction)
                setup.tracker.set_tags({ENTROPY_COLLAPSE_STEP: str(step)})
            if setup.val_problems and t.val_every and (step % t.val_every == 0 or step == t.steps):
                metrics["val/acc"] = _val_accuracy(setup)
                result.val[step] = metrics["val/acc"]
            setup.tracker.log(metrics, step)
            result.history.append({"step": step, **metrics})
            progress.advance(step, metrics)
            if (t.checkpoint_every and step % t.checkpoint_every == 0) or step == last:
                checkpoint(step)

    if last < t.steps:  # stopped early on purpose (trainer.stop_after): resumable, not finished
        setup.tracker.end("KILLED")
        return result
    setup.backend.save_model(result.final_model_dir, setup.tokenizer)  # rank 0 writes
    setup.tracker.finish(result)
    setup.console.summary(result)
    return result
