"""Every reference answer in the shared data, graded against itself and against a rewrite.

    python benchmarks/reward_reference_check.py [--data DIR] [--workers 2] [--every 1]

Per file, prints how often (1) `math_reward`'s path (extraction + fast path + math-verify) accepts
"... \\boxed{answer}" for the answer itself, (2) math-verify alone (no string fast path) accepts the
answer against itself, (3) an equivalent rewrite is accepted (`x = answer` for integers,
`\\displaystyle answer` otherwise), and lists the failures.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from aent_cli.rewards import Grader
from aent_cli.rewards.pool import VerifierPool


def rewrite(answer: str) -> str:
    return f"x = {answer}" if answer.lstrip("-").isdigit() else "\\displaystyle " + answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("AENT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=int, default=1, help="check every n-th row")
    args = parser.parse_args()
    grader = Grader(timeout_s=10.0, workers=args.workers)
    pool = VerifierPool(args.workers, timeout_s=10.0)
    try:
        for path in sorted(args.data.glob("*/*.jsonl")):
            answers = [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()]
            answers = answers[::args.every]
            start = time.perf_counter()
            full = grader.grade(["Hence the answer is $\\boxed{" + a + "}$." for a in answers], answers)
            raw = pool.run([(a, a) for a in answers])
            rewritten = pool.run([(rewrite(a), a) for a in answers])
            n = len(answers)
            bad_raw = [a for a, o in zip(answers, raw) if not (o.equivalent and o.status == "ok")]
            bad_rw = [a for a, o in zip(answers, rewritten) if not (o.equivalent and o.status == "ok")]
            print(f"{path.parent.name}/{path.name}: {n} answers; reward path {sum(full.correct) / n:.4f}; "
                  f"math-verify self {1 - len(bad_raw) / n:.4f}; rewrite {1 - len(bad_rw) / n:.4f}; "
                  f"timeouts {full.timeouts + sum(o.status == 'timeout' for o in raw + rewritten)}; "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            for a in bad_raw:
                print(f"   self fails: {a!r}")
            for a in bad_rw[:10]:
                print(f"   rewrite fails: {rewrite(a)!r} vs {a!r}")
    finally:
        grader.close()
        pool.close()


if __name__ == "__main__":
    main()
