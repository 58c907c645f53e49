"""CPU time of composing a config (`aent_cli.config.compose_config`), which every command, every sweep job
and most tests pay: with no override and with the 10 overrides of a typical small training run.

    python benchmarks/bench_compose.py [--repeat 20]

Prints CPU seconds per call (process time, so load from other processes matters less than for wall time)
for the whole compose and for its override check alone, after one warm-up call. To compare two trees,
run it once with each on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import time

OVERRIDES = ["trainer.steps=1", "trainer.batch_size=4", "trainer.mini_batch_size=4", "rollout.n=4",
             "trainer.val_every=0", "data.val_size=16", "trainer.threads=1", "tracking.uri=sqlite:////tmp/x.db",
             "trainer.output_dir=/tmp/runs", "trainer.run_name=bench"]


def cpu_per_call(fn, repeat: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    import aent_cli
    from aent_cli.config import compose as compose_module
    from aent_cli.config import compose_config

    print(f"aent_cli from {aent_cli.__file__}; {args.repeat} calls each after one warm-up")
    for label, fn in (("compose, no override", lambda: compose_config([])),
                      ("compose, 10 overrides", lambda: compose_config(OVERRIDES)),
                      ("override check alone, 10 overrides", lambda: compose_module.check_overrides(OVERRIDES))):
        print(f"{label:<36} {cpu_per_call(fn, args.repeat) * 1000:8.1f} ms CPU per call", flush=True)


if __name__ == "__main__":
    main()
