"""How long `aent sweep --dry-run` takes to plan and print a big grid (issue s15r point 6).

    python benchmarks/bench_sweep_plan.py [--seeds 3000] [--sample 20]

Grid: algo.p=0.2,0.33,0.5 x trainer.seed=range(SEEDS) (9,000 jobs by default). Prints, in one run so
the variants share the machine's load: expansion (Hydra's sweeper + labels), validation as before (a
full Hydra compose per job, timed on --sample jobs before and after the new path and scaled to the grid)
and as now (sweep.runner.validate_jobs on every job), and printing every row as a rich table against
the printed dry run now (first/last 20 rows + summary).
"""
from __future__ import annotations

import argparse
import io
import os
import time

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3000)
    parser.add_argument("--sample", type=int, default=20)
    args = parser.parse_args()

    from aent_cli.cli.sweep_cmd import print_jobs
    from aent_cli.sweep.hydra_session import hydra_session
    from aent_cli.sweep.runner import _validated, validate_jobs
    from aent_cli.sweep.spec import SweepFile, expand_jobs

    print(f"load average at start: {os.getloadavg()}")
    start = time.perf_counter()
    with hydra_session() as loader:
        jobs = expand_jobs(SweepFile(name="inline"), ["algo.p=0.2,0.33,0.5", f"trainer.seed=range({args.seeds})"],
                           loader)
    print(f"expand {len(jobs)} jobs: {time.perf_counter() - start:.2f} s")

    def per_job_compose() -> float:
        t = time.perf_counter()
        for job in jobs[: args.sample]:
            _validated(job)
        return (time.perf_counter() - t) / args.sample

    before = per_job_compose()
    start = time.perf_counter()
    count = sum(1 for _ in validate_jobs(jobs))
    now = time.perf_counter() - start
    after = per_job_compose()
    old = (before + after) / 2
    print(f"validate, a compose per job (before): {old * 1000:.0f} ms/job on {args.sample} jobs "
          f"(twice: {before * 1000:.0f}, {after * 1000:.0f}) -> {old * len(jobs):.0f} s for {len(jobs)} jobs")
    print(f"validate, validate_jobs (now): {now:.1f} s for {count} jobs ({now / count * 1000:.1f} ms/job), "
          f"{old * len(jobs) / now:.0f}x faster")

    class Plan:
        name = "inline"

    Plan.jobs = jobs
    start = time.perf_counter()
    table = Table(title=f"inline: {len(jobs)} job(s)")
    for name in ("#", "label", "overrides"):
        table.add_column(name)
    for job in jobs:
        table.add_row(str(job.index), job.label, job.text)
    Console(file=io.StringIO(), width=120).print(table)
    every = time.perf_counter() - start
    start = time.perf_counter()
    print_jobs(Plan, Console(file=io.StringIO(), width=120))
    ends = time.perf_counter() - start
    print(f"print every row (before): {every:.2f} s; print first/last 20 + summary (now): {ends:.3f} s")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
