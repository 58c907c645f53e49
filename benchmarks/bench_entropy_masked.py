"""Cost of -inf logits (a masked vocabulary) in full_entropy / clamped_entropy on CPU, forward +
backward: the same logits with and without a masked share, on the C kernels and on the torch path.

    python benchmarks/bench_entropy_masked.py                 # N=256, V=151936, 0.2% masked, p=0.33
    python benchmarks/bench_entropy_masked.py --n 64 --repeats 5 --masked 0.5

Rows with -inf (found by one min/max pass) skip the C kernels and take the torch path, which handles
them in its own passes (clamped: an exact kthvalue selection for those rows). All cases run
interleaved (repeat r of every case, then r + 1) so a shared machine slows them alike; figures are
medians (best in brackets) in ms per call.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from aent_cli.algos.entropy import clamped_entropy, full_entropy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--masked", type=float, default=0.002, help="share of -inf logits per row")
    ap.add_argument("--p", type=float, default=0.33)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    plain = torch.randn(args.n, args.vocab, generator=g) * 3
    masked = plain.masked_fill(torch.rand(args.n, args.vocab, generator=g) < args.masked, float("-inf"))
    cases = {}
    for path in ("native", "torch"):
        for name, fn in (("full", full_entropy), ("clamped", lambda x: clamped_entropy(x, args.p))):
            for label, x in (("finite", plain), ("masked", masked)):
                cases[f"{path:6s} {name:7s} {label}"] = (path, fn, x)
    times = {k: [] for k in cases}
    for _ in range(args.repeats):
        for key, (path, fn, x) in cases.items():
            os.environ["AENT_NATIVE_ENTROPY"] = "1" if path == "native" else "0"
            leaf = x.clone().requires_grad_(True)
            start = time.perf_counter()
            fn(leaf).mean().backward()
            times[key].append(1000 * (time.perf_counter() - start))
            assert torch.isfinite(leaf.grad).all()
    print(f"N={args.n} V={args.vocab} masked={args.masked} p={args.p} threads={args.threads} "
          f"load={os.getloadavg()[0]:.1f}")
    for key, values in times.items():
        print(f"{key:24s} {statistics.median(values):9.1f} ms  (best {min(values):.1f})")


if __name__ == "__main__":
    main()
