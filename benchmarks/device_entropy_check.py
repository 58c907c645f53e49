"""Entropy bonuses on a GPU machine: CUDA results against the CPU kernels, CUDA timings, and how the
CPU kernels scale with threads on a many-core host.

    python benchmarks/device_entropy_check.py            # needs CUDA for parts 1-2
    python benchmarks/device_entropy_check.py --cpu-only # part 3 alone

1. Correctness: full and clamped entropy (p = 0.33, V = 151,936) of the same fp32 logits on CUDA
   (torch path: kthvalue selection, batched masks) and on the CPU (fused C kernels when built):
   largest value and gradient differences, and whether the same tokens get a zero gradient.
2. CUDA forward + backward time (median of 5 after warm-up, synchronised) and peak memory at
   N = 4096 for full, clamped and the straightforward approach (benchmarks/bench_entropy.py).
3. CPU: the fused kernels at N = 1024 with 1 thread and with all cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aent_cli.algos import entropy_native  # noqa: E402
from aent_cli.algos.entropy import clamped_entropy, full_entropy  # noqa: E402
from benchmarks.bench_entropy import forward_backward, make_logits, straightforward_clamped_entropy  # noqa: E402

V, P = 151_936, 0.33
CASES = {"full": lambda x: full_entropy(x), "clamped": lambda x: clamped_entropy(x, P),
         "straightforward": lambda x: straightforward_clamped_entropy(x, P)}


def value_and_grad(case: str, logits: torch.Tensor):
    x = logits.detach().clone().requires_grad_(True)
    out = CASES[case](x)
    (out * torch.linspace(-1, 2, out.numel(), device=x.device)).sum().backward()
    return out.detach().double().cpu(), x.grad.double().cpu()


def correctness() -> None:
    logits = make_logits(256, V, seed=1)
    for case in ("full", "clamped"):
        v_cpu, g_cpu = value_and_grad(case, logits)
        v_gpu, g_gpu = value_and_grad(case, logits.cuda())
        same_zeros = bool(torch.equal(g_cpu == 0, g_gpu == 0))
        print(f"  {case:8s} max |value cuda - cpu| {float((v_gpu - v_cpu).abs().max()):.2e}  "
              f"max |grad diff| {float((g_gpu - g_cpu).abs().max()):.2e} (grad scale {float(g_cpu.abs().max()):.2e})  "
              f"same zero-gradient tokens: {same_zeros}")


def cuda_timing(n: int) -> None:
    logits = make_logits(n, V).cuda()
    for case in CASES:
        times = []
        for repeat in range(7):
            x = logits.detach().requires_grad_(True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            start = time.perf_counter()
            CASES[case](x).mean().backward()
            torch.cuda.synchronize()
            if repeat >= 2:
                times.append(time.perf_counter() - start)
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            del x
        print(f"  {case:16s} median {statistics.median(times) * 1e3:8.1f} ms  best {min(times) * 1e3:8.1f} ms  "
              f"peak extra memory {peak:8.0f} MiB (gradient {n * V * 4 / 2**20:.0f} MiB)")


def cpu_threads(n: int) -> None:
    logits = make_logits(n, V)
    kernels = "fused C kernels" if entropy_native.kernels() is not None else "torch path (no C compiler)"
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        for case in ("full_entropy", "clamped_entropy"):
            best = min(forward_backward(case, logits, P) for _ in range(3))
            print(f"  {kernels}, {threads:2d} threads, {case:16s} best {best:6.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    if not args.cpu_only:
        if not torch.cuda.is_available():
            sys.exit("device_entropy_check: no CUDA device (use --cpu-only)")
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
        print(f"1. CUDA vs CPU, N=256, V={V}, p={P}, fp32")
        correctness()
        print(f"2. CUDA forward+backward, N={args.n}, V={V}, p={P}, fp32")
        cuda_timing(args.n)
    print(f"3. CPU, N=1024, V={V}, p={P}, fp32, {os.cpu_count()} cores")
    cpu_threads(1024)


if __name__ == "__main__":
    main()
