"""Rollout speed on a real model: aent's lean sampler vs transformers `generate` vs the floor, side by side.

    python benchmarks/bench_rollout.py                                  # SmolLM2-135M-Instruct, 1 thread
    python benchmarks/bench_rollout.py --rows 16 64 --new-tokens 64 --repeats 2 --long 256

The model: SmolLM2-135M-Instruct from the aent cache ($AENT_CACHE_DIR or ~/.cache/aent, built by
../shared/models/smollm2.py), fp32, one thread. Prompts: chat-template prompts of generated word
problems (aent_cli/data/word_problems.py), `rows / n` distinct prompts with n = 4 samples each (a
GRPO group), temperature 1, top-p 1; the same prompts and seed for both samplers, which then draw
the same tokens (tests/test_rollout_lean.py), so both generate the same number of tokens.

The floor of one decoding step is the larger of the weight bytes read once at one core's copy
bandwidth and 2 x parameters x rows FLOPs at one core's fp32 matmul rate, both measured here in the
same run (a 256 MiB tensor copy; a 1024^3 matmul). It ignores attention and sampling, so it is a
lower bound; floor tokens/s = rows / floor step.

Timing: the cases run interleaved (repeat r of every case, then r + 1) so that a machine shared with
other jobs slows them alike; each figure is the median over repeats. `--long L` adds the lean
sampler at the first row count with L new tokens against the same at --new-tokens: the ms per
generated token of both (issue 17's goal: within 1.2x). EOS is ignored there (`--long` rows run to
the limit) so both lengths generate rows x tokens exactly.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

NAME = "SmolLM2-135M-Instruct"


def model_dir() -> Path:
    return Path(os.environ.get("AENT_CACHE_DIR", Path.home() / ".cache" / "aent")).expanduser() / "models" / NAME


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second one core copies (bytes of the source read), best of `repeats`."""
    src = torch.ones(mib * 1024 * 1024 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - began)
    return src.numel() * 4 / best


def matmul_rate(size: int = 1024, repeats: int = 5) -> float:
    """fp32 FLOP/s of one core on a size^3 matmul, best of `repeats`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - began)
    return 2 * size ** 3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--long", type=int, default=0, help="also the lean sampler at this many new tokens")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from aent_cli.config import compose_config
    from aent_cli.data.prompts import render_prompt
    from aent_cli.data.word_problems import word_problems
    from aent_cli.models.loading import load_policy
    from aent_cli.rollout import SamplingParams
    from aent_cli.rollout.hf import HFRollout

    path = model_dir()
    if not (path / "model.safetensors").is_file():
        raise SystemExit(f"{path}: no model; build it with python ../shared/models/smollm2.py {path}")
    model, tok = load_policy(compose_config(["model=hf", f"model.path={path}", "model.dtype=float32"]).model)
    model.eval()
    params = {id(p): p for p in model.parameters()}.values()
    n_params = sum(p.numel() for p in params)
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    bandwidth, flops = copy_bandwidth(), matmul_rate()
    print(f"{NAME}: {n_params / 1e6:.1f}M parameters, {weight_bytes / 2**20:.0f} MiB; threads {args.threads}; "
          f"one core: copy {bandwidth / 1e9:.1f} GB/s, fp32 matmul {flops / 1e9:.1f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    problems = word_problems(max(args.rows) // args.group + 1, 0, "test", digits=2)
    samplers = {"aent": HFRollout(model, tok), "generate": HFRollout(model, tok, lean=False)}
    cases = [(rows, name, args.new_tokens, False) for rows in args.rows for name in samplers]
    if args.long:
        rows = args.rows[0]
        cases += [(rows, "aent", args.new_tokens, True), (rows, "aent", args.long, True)]
    times = {case: [] for case in cases}
    tokens = {}
    for _ in range(args.repeats):
        for case in cases:
            rows, name, new_tokens, no_eos = case
            prompts = [render_prompt(p.problem, "chat", tok) for p in problems[:rows // args.group]]
            backend = samplers[name]
            saved = backend.stop_ids
            if no_eos:
                backend.stop_ids = (-1,)  # no row stops early: rows x new_tokens tokens
            torch.manual_seed(0)
            began = time.perf_counter()
            out = backend.generate(prompts, SamplingParams(n=args.group, temperature=1.0, max_new_tokens=new_tokens))
            times[case].append(time.perf_counter() - began)
            backend.stop_ids = saved
            tokens[case] = sum(len(c.token_ids) for g in out for c in g.completions)

    print(f"\n{'rows':>5} {'sampler':>9} {'new':>5} {'tokens':>7} {'s':>7} {'tok/s':>7} {'ms/token':>9}")
    rate = {}
    for case in cases:
        rows, name, new_tokens, no_eos = case
        seconds = statistics.median(times[case])
        rate[case] = tokens[case] / seconds
        label = name + (" *" if no_eos else "")
        print(f"{rows:>5} {label:>9} {new_tokens:>5} {tokens[case]:>7} {seconds:>7.1f} {rate[case]:>7.1f} "
              f"{1000 / rate[case]:>9.1f}")
    print("(* stop ids off: every row runs to the limit)\n")
    for rows in args.rows:
        step = max(weight_bytes / bandwidth, 2 * n_params * rows / flops)
        floor = rows / step
        lean, ref = rate[(rows, "aent", args.new_tokens, False)], rate[(rows, "generate", args.new_tokens, False)]
        print(f"rows {rows}: aent {lean:.1f} tok/s = {lean / ref:.2f}x generate ({ref:.1f}); floor {floor:.0f} tok/s "
              f"(step {step * 1000:.0f} ms): aent at {floor / lean:.1f}x the floor")
    if args.long:
        rows = args.rows[0]
        short = 1000 / rate[(rows, "aent", args.new_tokens, True)]
        long = 1000 / rate[(rows, "aent", args.long, True)]
        print(f"rows {rows}, lean sampler: {long:.1f} ms/token at {args.long} new tokens vs {short:.1f} at "
              f"{args.new_tokens}: {long / short:.2f}x")


if __name__ == "__main__":
    main()
