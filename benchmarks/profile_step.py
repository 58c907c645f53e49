"""Where one aent training step spends its time, as a table of shares over several steps.

    python benchmarks/profile_step.py [--steps 10] [--warmup 2] [--threads 1] [--cprofile 25] [overrides...]

Builds a real run (`compose_config` -> `TrainingSetup`, a throwaway MLflow store and output dir) and
calls `train_step` as the training loop does, then `tracker.log`. Phases: rollout (generation),
reward (grading + advantages), old log-probs (the extra no-grad pass, skipped with a single update
per step; packing the batch is counted here), update (forward/backward/optimiser), coefficient
update (eq. 4.1), rest of the step (prompts, metrics) and logging (MLflow, flushed every
`tracking.log_every` steps). Extra arguments are Hydra overrides, e.g. `algo=grpo rollout.n=16`.
`--cprofile N` also prints the N functions with the most cumulative time inside the measured steps.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

PHASES = ("rollout", "reward", "old_logp", "update", "coef_update", "rest_of_step", "logging")
LABELS = {"rollout": "rollout (generate)", "reward": "reward + advantages", "old_logp": "old log-probs (+ pack)",
          "update": "update (fwd/bwd/optim)", "coef_update": "coefficient update", "rest_of_step": "rest of step",
          "logging": "logging (MLflow)"}


class TimedCoef:
    """The run's coefficient controller, with the time spent in `update` recorded."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.seconds = 0.0

    def update(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._inner.update(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    def __getattr__(self, name):
        return getattr(self._inner, name)


def profile(args) -> None:
    import torch

    from aent_cli.algos.coef import build_coef
    from aent_cli.config import compose_config
    from aent_cli.engine.sampler import QuerySampler
    from aent_cli.engine.setup import RunContext, TrainingSetup
    from aent_cli.engine.trainer import train_step

    with tempfile.TemporaryDirectory(prefix="aent-profile-") as tmp:
        overrides = ["trainer.device=cpu", f"trainer.threads={args.threads}", f"trainer.output_dir={tmp}/runs",
                     f"tracking.uri=sqlite:///{Path(tmp) / 'mlflow.db'}", *args.overrides]
        cfg = compose_config(overrides)
        setup = TrainingSetup.build(cfg, RunContext(quiet=True))
        try:
            t = cfg.trainer
            sampler = QuerySampler(len(setup.train_problems), t.batch_size, t.seed, cfg.data.shuffle)
            coef = TimedCoef(build_coef(cfg.algo, sampler.steps_per_epoch))
            rows, tokens = [], []
            profiler = cProfile.Profile() if args.cprofile else None
            for step in range(1, args.warmup + args.steps + 1):
                measured = step > args.warmup
                if measured and profiler:
                    profiler.enable()
                coef.seconds = 0.0
                started = time.perf_counter()
                metrics = train_step(setup, coef, sampler, step)
                stepped = time.perf_counter()
                setup.tracker.log(metrics, step)
                logged = time.perf_counter()
                if profiler:
                    profiler.disable()
                if not measured:
                    continue
                row = {k: metrics[f"timing/{k}_s"] for k in ("rollout", "reward", "old_logp", "update")}
                row["coef_update"] = coef.seconds
                row["rest_of_step"] = (stepped - started) - sum(row.values())
                row["logging"] = logged - stepped
                rows.append(row)
                tokens.append(metrics["response_length/mean"] * t.batch_size * cfg.rollout.n)
            setup.tracker.end("FINISHED")
        finally:
            setup.close()

    total = sum(sum(r.values()) for r in rows)
    load = os.getloadavg()
    print(f"algo={cfg.algo.name}: {t.batch_size} prompts x {cfg.rollout.n} completions, <= "
          f"{cfg.rollout.max_new_tokens} new tokens, model {cfg.model.path}, {torch.get_num_threads()} torch "
          f"thread(s), log_every={cfg.tracking.log_every}; {len(rows)} steps after {args.warmup} warm-up; "
          f"load average {load[0]:.1f}")
    header = f"{'phase':<26} {'median s':>9} {'mean s':>9} {'share':>7}"
    print(header)
    print("-" * len(header))
    for phase in PHASES:
        values = [r[phase] for r in rows]
        share = sum(values) / total if total else 0.0
        print(f"{LABELS[phase]:<26} {statistics.median(values):9.4f} {statistics.fmean(values):9.4f} {share:7.1%}")
    steps = [sum(r.values()) for r in rows]
    print("-" * len(header))
    print(f"{'whole step':<26} {statistics.median(steps):9.4f} {statistics.fmean(steps):9.4f} {1:7.0%}")
    print(f"generated tokens per second (median): "
          f"{statistics.median(n / s for n, s in zip(tokens, steps)):.0f}")
    if profiler:
        print()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.cprofile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="measured steps")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    ap.add_argument("--cprofile", type=int, default=0, metavar="N", help="also print the top N functions")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. algo=grpo")
    profile(ap.parse_args())


if __name__ == "__main__":
    main()
