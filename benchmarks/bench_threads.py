"""Which `trainer.threads` default survives a shared machine: the default run's two phases timed with
1, 2 and torch's default thread count, without and with competing busy processes.

    python benchmarks/bench_threads.py [--ws-seconds 60] [--rl-steps 5] [--busy 2] [--repeats 1]

Each measurement is a fresh process (torch's thread pool is per process) that
1. warm-starts the embedded model (the default recipe, 1200 supervised steps on first use) for
   `--ws-seconds` after its first step and counts the steps done (a slow setting cannot stall the
   benchmark), then
2. runs the default `aent train` config for `--rl-steps` RL steps (no validation) on a short
   warm-started model, and takes the time per step.
The "busy" condition starts `--busy` processes that spin a CPU core each (`while True: pass`) for the
length of the measurement, as other jobs on a shared machine do. Conditions and thread counts are
interleaved in one run so background load is shared. Printed: seconds per warm-start step, RL seconds,
the default run's estimated cold time (1200 warm-start steps + RL), the load average before each
measurement, and each thread count's slowdown against the best in its condition.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_WS_STEPS, DEFAULT_RL_STEPS = 1200, 60
SHORT_WS_STEPS = 20  # the model RL starts from (RL's cost per step does not depend on how well it was trained)


class _Budget(Exception):
    pass


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from aent_cli.config import compose_config, validate
    from aent_cli.engine.setup import RunContext
    from aent_cli.engine.trainer import run_training
    from aent_cli.models.tiny import ensure_tiny_model

    marks = []

    def progress_factory(total):
        def progress(step, loss):
            marks.append(time.perf_counter())
            if marks[-1] - marks[0] >= args.ws_seconds:
                raise _Budget
        return progress

    try:
        ensure_tiny_model(DEFAULT_WS_STEPS, args.seed, progress_factory)
    except _Budget:
        pass
    ws_step = (marks[-1] - marks[0]) / max(1, len(marks) - 1)  # the first step (allocation) not counted
    ensure_tiny_model(SHORT_WS_STEPS, args.seed)
    with tempfile.TemporaryDirectory(prefix="aent-bench-threads-") as tmp:
        common = [f"model.tiny_warmstart_steps={SHORT_WS_STEPS}", f"model.tiny_seed={args.seed}",
                  "trainer.val_every=0", f"trainer.threads={args.threads}", "trainer.device=cpu",
                  f"trainer.output_dir={tmp}/runs", f"tracking.uri=sqlite:///{tmp}/mlflow.db"]
        cfg = validate(compose_config(common + [f"trainer.steps={1 + args.rl_steps}"]))
        history = run_training(cfg, RunContext(quiet=True)).history
        # the first step pays for allocations and the grader's start: not a step's cost
        times = [h["perf/step_time_s"] for h in history[1:]]
        rl_step = sum(times) / len(times)
    print(json.dumps({"threads": torch.get_num_threads(), "ws_step_s": ws_step, "ws_steps": len(marks),
                      "rl_step_s": rl_step}))


def measure(threads: int, busy: int, seed: int, args, env) -> dict:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        load = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--seed", str(seed),
               "--ws-seconds", str(args.ws_seconds), "--rl-steps", str(args.rl_steps)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(setting=threads, busy=busy, load=load)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--ws-seconds", type=float, default=60.0, help="seconds of warm start measured")
    parser.add_argument("--rl-steps", type=int, default=5, help="RL steps measured")
    parser.add_argument("--busy", type=int, default=2, help="competing busy processes in the busy condition")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--settings", default="1,2,0", help="trainer.threads values (0 = torch's default)")
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import torch

    settings = [int(s) for s in args.settings.split(",")]
    repo = Path(__file__).resolve().parents[1]
    cache = tempfile.mkdtemp(prefix="aent-bench-threads-cache-")  # compiled kernels shared, models fresh
    env = {**os.environ, "AENT_CACHE_DIR": cache, "PYTHONPATH": str(repo),
           "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    print(f"cpu cores {os.cpu_count()}, torch default threads {torch.get_num_threads()}, "
          f"warm start measured for {args.ws_seconds:g} s, RL for {args.rl_steps} steps; uptime: "
          + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    # one throw-away run builds the native kernels so no measurement pays for the compiler
    measure(1, 0, 0, argparse.Namespace(ws_seconds=1, rl_steps=1), env)
    results, seed = [], 1
    for _ in range(args.repeats):
        for threads in settings:
            for busy in (0, args.busy):
                row = measure(threads, busy, seed, args, env)
                seed += 1
                row["cold_s"] = row["ws_step_s"] * DEFAULT_WS_STEPS + row["rl_step_s"] * DEFAULT_RL_STEPS
                results.append(row)
                print(f"  threads={threads} ({row['threads']} used) busy={busy}: load {row['load']:.1f}, "
                      f"warm start {1000 * row['ws_step_s']:.0f} ms/step ({row['ws_steps']} steps), "
                      f"RL {1000 * row['rl_step_s']:.0f} ms/step", flush=True)
    print()
    print("| trainer.threads | competing busy processes | load avg (1 min) | warm start ms/step | RL ms/step "
          "| est. cold default run s | x best |")
    print("|---|---|---|---|---|---|---|")
    for busy in (0, args.busy):
        rows = [r for r in results if r["busy"] == busy]
        for threads in settings:
            mine = [r for r in rows if r["setting"] == threads]
            cold = sum(r["cold_s"] for r in mine) / len(mine)
            best = min(sum(r["cold_s"] for r in rows if r["setting"] == t) / len(mine) for t in settings)
            name = f"{threads} (torch default = {mine[0]['threads']})" if threads == 0 else str(threads)
            print(f"| {name} | {busy} | {sum(r['load'] for r in mine) / len(mine):.1f} "
                  f"| {1000 * sum(r['ws_step_s'] for r in mine) / len(mine):.0f} "
                  f"| {1000 * sum(r['rl_step_s'] for r in mine) / len(mine):.0f} | {cold:.0f} | {cold / best:.2f} |")


if __name__ == "__main__":
    main()
