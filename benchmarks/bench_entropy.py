"""Speed and memory of the entropy bonuses on CPU: full_entropy, clamped_entropy, and the
straightforward clamped entropy of the AEnt authors' public code, forward + backward.

    python benchmarks/bench_entropy.py                      # N=4096, V=151936, p=0.33, fp32
    python benchmarks/bench_entropy.py --n 1024 --repeats 5 --mem-n 512,2048

Timing: all cases run interleaved in one process (repeat r of every case, then repeat r + 1), so a
machine shared with other jobs slows them alike; each figure is the median (and the best) over
repeats, and the ratios are medians of the per-repeat ratios (and best over best). Each repeat is
one forward + backward of the mean entropy over N positions, including the allocation of the [N, V]
gradient.

On a machine whose cores are oversubscribed by other jobs, multi-threaded torch ops stall at every
parallel region, and clamped_entropy has about three times as many as full_entropy: compare with
--threads 1 there (the printed load average says whether that is the case).

Memory: each (case, N) runs in a fresh subprocess that allocates the logits, then reports the growth
of the peak resident set (VmHWM, reset once the logits exist) during forward + backward, and that
growth minus the gradient itself (the working memory). torch's CPU allocator has no peak counter;
tracemalloc does not see it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from aent_cli.algos import entropy_native
from aent_cli.algos.entropy import clamped_entropy, full_entropy, num_dropped

MIB = 1024 * 1024


def straightforward_clamped_entropy(logits: torch.Tensor, p: float, chunk_rows: int = 1024) -> torch.Tensor:
    """The authors' way: sorted top-k of the floor(p * V) lowest logits, a boolean [N, V] mask,
    masked log_softmax and softmax, 1024 rows at a time, differentiated by autograd."""
    vocab = logits.shape[-1]
    drop = num_dropped(vocab, p)
    out = []
    for start in range(0, logits.shape[0], chunk_rows):
        x = logits[start:start + chunk_rows].float()
        lowest = torch.topk(x, drop, dim=-1, largest=False, sorted=True).indices
        keep = torch.ones_like(x, dtype=torch.bool).scatter_(-1, lowest, False)
        masked = x.masked_fill(~keep, float("-inf"))
        logp = torch.log_softmax(masked, dim=-1)
        prob = torch.softmax(masked, dim=-1)
        out.append(-(prob * logp.masked_fill(~keep, 0.0)).sum(-1))
    return torch.cat(out)


def torch_path(fn):
    """The same function with the fused C kernels switched off (what runs where no compiler exists)."""
    def call(x, p):
        os.environ["AENT_NATIVE_ENTROPY"] = "0"
        try:
            return fn(x, p)
        finally:
            os.environ.pop("AENT_NATIVE_ENTROPY")
    return call


CASES = {
    "full_entropy": lambda x, p: full_entropy(x),
    "clamped_entropy": lambda x, p: clamped_entropy(x, p),
    "straightforward": lambda x, p: straightforward_clamped_entropy(x, p),
    "full_torch_path": torch_path(lambda x, p: full_entropy(x)),
    "clamped_torch_path": torch_path(lambda x, p: clamped_entropy(x, p)),
}


def make_logits(n: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """LLM-like rows: a Gaussian bulk (sd 2.5) with a few strongly preferred tokens per row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, vocab, generator=g).mul_(2.5)
    top = torch.randint(0, vocab, (n, 8), generator=g)
    x.scatter_add_(1, top, torch.rand(n, 8, generator=g).mul_(12.0).add_(4.0))
    return x


def forward_backward(case: str, logits: torch.Tensor, p: float) -> float:
    x = logits.detach().requires_grad_(True)
    start = time.perf_counter()
    CASES[case](x, p).mean().backward()
    elapsed = time.perf_counter() - start
    assert x.grad is not None and x.grad.shape == x.shape
    return elapsed


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure_memory(case: str, n: int, vocab: int, p: float) -> dict:
    """Run in a fresh process: peak-RSS growth during forward + backward, with and without the gradient.

    The peak is reset after the logits exist (writing 5 to /proc/self/clear_refs), so that building them
    does not hide it; where that is not allowed, ru_maxrss (the lifetime peak) is the fallback."""
    logits = make_logits(n, vocab)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        baseline, peak_of = _status_kib("VmRSS") * 1024, lambda: _status_kib("VmHWM") * 1024
    except OSError:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        peak_of = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # noqa: E731
    forward_backward(case, logits, p)
    peak = peak_of()
    grad_bytes = logits.numel() * logits.element_size()
    growth = (peak - baseline) / MIB
    return {"case": case, "n": n, "peak_growth_mib": growth, "working_mib": growth - grad_bytes / MIB}


def timing(args) -> None:
    torch.manual_seed(0)
    logits = make_logits(args.n, args.vocab)
    cases = [c for c in CASES if c in args.cases]
    for case in cases:  # warm-up: first-touch of buffers, lazily built sample positions
        forward_backward(case, logits[: min(args.n, 64)], args.p)
    times = {c: [] for c in cases}
    for _ in range(args.repeats):
        for case in cases:
            times[case].append(forward_backward(case, logits, args.p))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    kernels = "fused C kernels" if entropy_native.kernels() is not None else "NO C kernels (torch path)"
    print(f"full_entropy / clamped_entropy run on: {kernels}; the *_torch_path cases force the torch path")
    print(f"forward+backward, N={args.n}, V={args.vocab}, p={args.p}, fp32, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved repeats (load average now {load} on {os.cpu_count()} CPUs)")
    listed = lambda values, unit: ", ".join(f"{v:.2f}{unit}" for v in values)  # noqa: E731
    for case in cases:
        print(f"  {case:18s} median {statistics.median(times[case]):7.2f} s, best {min(times[case]):7.2f} s"
              f"   (runs: {listed(times[case], ' s')})")

    def ratio(a: str, b: str) -> None:
        if a in times and b in times:
            per_repeat = [x / y for x, y in zip(times[a], times[b])]
            print(f"  {a} / {b}: {statistics.median(per_repeat):.2f}x median of per-repeat ratios, "
                  f"{min(times[a]) / min(times[b]):.2f}x best to best (per repeat: {listed(per_repeat, 'x')})")

    ratio("clamped_entropy", "full_entropy")
    ratio("straightforward", "clamped_entropy")
    ratio("clamped_torch_path", "full_torch_path")
    ratio("full_torch_path", "full_entropy")


def memory(args) -> None:
    print(f"peak extra memory (fresh process per case; growth of peak RSS during forward+backward), V={args.vocab}")
    for n in [int(v) for v in args.mem_n.split(",")]:
        for case in [c for c in CASES if c in args.cases]:
            cmd = [sys.executable, __file__, "--child", case, "--n", str(n), "--vocab", str(args.vocab),
                   "--p", str(args.p), "--threads", str(torch.get_num_threads())]
            child = subprocess.run(cmd, check=True, capture_output=True, text=True)
            result = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"  N={n:5d} {case:18s} peak growth {result['peak_growth_mib']:8.0f} MiB"
                  f" = gradient {n * args.vocab * 4 / MIB:6.0f} MiB + working {result['working_mib']:7.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="positions (rows of logits)")
    parser.add_argument("--vocab", type=int, default=151_936, help="vocabulary size V")
    parser.add_argument("--p", type=float, default=0.33, help="clamping percentage")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    parser.add_argument("--mem-n", default="1024,2048",
                        help="N values for the memory figures ('' to skip); straightforward needs ~3.5 GB per 1024")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure_memory(args.child, args.n, args.vocab, args.p)))
        return
    if not math.isfinite(args.p) or not 0 <= args.p < 1:
        parser.error("--p must be in [0, 1)")
    if not args.skip_timing:
        timing(args)
    if args.mem_n:
        memory(args)


if __name__ == "__main__":
    main()
