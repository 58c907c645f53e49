"""Which `trainer.threads` default survives a shared machine: the default run's two phases timed with
1, 2 and torch's default thread count, without and with competing busy processes.

    python benchmarks/bench_threads.py [--ws-steps 200] [--rl-steps 60] [--busy 2] [--repeats 1]

Each measurement is a fresh process (torch's thread pool is per process) that
1. warm-starts the embedded model for `--ws-steps` supervised steps (a fresh recipe seed each time, so
   nothing comes from the cache; the default run does 1200 such steps on first use), then
2. runs the default `aent train` config (60 RL steps, val/acc every 20) on that model.
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

DEFAULT_WS_STEPS = 1200


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from aent_cli.config import compose_config, validate
    from aent_cli.engine.setup import RunContext
    from aent_cli.engine.trainer import run_training
    from aent_cli.models.tiny import ensure_tiny_model

    started = time.perf_counter()
    ensure_tiny_model(args.ws_steps, args.seed)
    warm = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="aent-bench-threads-") as tmp:
        cfg = validate(compose_config([
            f"model.tiny_warmstart_steps={args.ws_steps}", f"model.tiny_seed={args.seed}",
            f"trainer.steps={args.rl_steps}", f"trainer.threads={args.threads}", "trainer.device=cpu",
            f"trainer.output_dir={tmp}/runs", f"tracking.uri=sqlite:///{tmp}/mlflow.db"]))
        started = time.perf_counter()
        run_training(cfg, RunContext(quiet=True))
        rl = time.perf_counter() - started
    print(json.dumps({"threads": torch.get_num_threads(), "warm_s": warm, "rl_s": rl}))


def measure(threads: int, busy: int, seed: int, args, env) -> dict:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        load = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--seed", str(seed),
               "--ws-steps", str(args.ws_steps), "--rl-steps", str(args.rl_steps)]
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
    parser.add_argument("--ws-steps", type=int, default=200, help="warm-start steps measured (default run: 1200)")
    parser.add_argument("--rl-steps", type=int, default=60, help="RL steps (the default run's 60)")
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
          f"warm start {args.ws_steps} steps measured, RL {args.rl_steps} steps; uptime: "
          + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    # one throw-away run builds the native kernels so no measurement pays for the compiler
    measure(1, 0, 0, argparse.Namespace(ws_steps=2, rl_steps=1), env)
    results, seed = [], 1
    for _ in range(args.repeats):
        for threads in settings:
            for busy in (0, args.busy):
                row = measure(threads, busy, seed, args, env)
                seed += 1
                row["cold_s"] = row["warm_s"] / args.ws_steps * DEFAULT_WS_STEPS + row["rl_s"]
                results.append(row)
                print(f"  threads={threads} ({row['threads']} used) busy={busy}: load {row['load']:.1f}, "
                      f"warm start {1000 * row['warm_s'] / args.ws_steps:.0f} ms/step, RL {row['rl_s']:.0f} s",
                      flush=True)
    print()
    print("| trainer.threads | competing busy processes | load avg (1 min) | warm start ms/step | RL s "
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
                  f"| {1000 * sum(r['warm_s'] for r in mine) / len(mine) / args.ws_steps:.0f} "
                  f"| {sum(r['rl_s'] for r in mine) / len(mine):.0f} | {cold:.0f} | {cold / best:.2f} |")


if __name__ == "__main__":
    main()
