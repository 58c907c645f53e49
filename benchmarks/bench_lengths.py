"""Cost per real token of a training step as response lengths grow and spread: padding waste.

    python benchmarks/bench_lengths.py                                   # embedded model, 64 sequences
    python benchmarks/bench_lengths.py --model ~/.cache/aent/models/SmolLM2-135M-Instruct \\
        --queries 4 --n 4 --before /tmp/aent-before --before-up-to 64     # SmolLM2, 16 sequences

One training step (forward + backward of the GRPO + clamped-entropy loss, then AdamW) on `--queries`
x `--n` sequences whose response lengths are skewed: 5% of the sequences (at least one: 3 of 64,
1 of 16) reach the maximum, the others are drawn uniformly between max/16 and max/4 (seeded; the same for every
configuration). Token ids are uniform over the vocabulary; prompts as in `bench_train_step.py`.
Each (maximum length x code tree) runs in a fresh process with 1 torch thread, interleaved,
`--rounds` times. Printed: response tokens, seconds per step, ms per real (response) token, its
ratio to the smallest maximum's, the step's peak resident memory above what the process held
before it (Linux VmHWM after /proc/self/clear_refs) and the whole process's, and ms per GFLOP of
the model FLOPs the step must compute (`train_batch.work`: a flat ms/GFLOP means the cost grows
only with the work). `--before-up-to N` runs the before tree only at maxima up to N; `--flops-only`
prints each configuration's token counts, model FLOPs and attention's share of them, without timing;
`--micro-batch-tokens N [M ...]` sets the after tree's token budget (several: one row each).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def skewed_lengths(rows: int, longest: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n_long = max(1, round(rows * 0.05))
    short = torch.randint(max(1, longest // 16), max(2, longest // 4) + 1, (rows - n_long,), generator=g).tolist()
    lengths = short + [longest] * n_long
    order = torch.randperm(rows, generator=g).tolist()
    return [lengths[i] for i in order]


def child(spec: dict) -> dict:
    sys.path.insert(0, str(HERE))
    import train_batch as tb
    optimise = tb.optimise  # either engine/update.py API (--before trees)

    torch.set_num_threads(1)
    model, tokenizer, cfg = tb.load(spec["model"], "float32", False, "cpu")
    vocab = model.get_output_embeddings().weight.shape[0]
    batch_prompts = tb.prompts(spec["model"], tokenizer, cfg, spec["queries"])
    batch = tb.make_batch(batch_prompts, spec["n"], spec["lengths"], vocab, tokenizer.pad_token_id)
    work = tb.work(model, batch)
    counts = {"tokens": int(batch.response_mask.sum()), "prompt_tokens": sum(len(p) for p in batch_prompts),
              "flops": work["flops"], "attention_flops": work["attention_flops"]}
    if spec.get("flops_only"):
        return counts
    advantages = torch.randn(batch.input_ids.shape[0], generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    kwargs = dict(temperature=1.0, chunk=cfg.model.logit_chunk, group_size=spec["n"], mini_batch_queries=spec["queries"],
                  micro_batch_size=cfg.trainer.micro_batch_size, ppo_epochs=1, grad_clip=1.0,
                  max_response_length=max(spec["lengths"]))
    if "micro_batch_tokens" in cfg.trainer:
        kwargs["micro_batch_tokens"] = spec.get("micro_batch_tokens") or cfg.trainer.micro_batch_tokens
    warm = batch.rows(slice(0, spec["n"]))  # one group, for the allocator and kernels
    optimise(model, optimizer, cfg.algo, warm, advantages[:spec["n"]], None, None, 0.01,
             **{**kwargs, "mini_batch_queries": 1})
    baseline = tb.reset_peak_rss()
    started = time.perf_counter()
    optimise(model, optimizer, cfg.algo, batch, advantages, None, None, 0.01, **kwargs)
    seconds = time.perf_counter() - started
    peak = tb.peak_rss_mb()
    return {**counts, "seconds": seconds, "peak_mb": peak - baseline, "process_peak_mb": peak,
            "micro_batch_tokens": kwargs.get("micro_batch_tokens", 0), "load": os.getloadavg()[0]}


def run_child(spec: dict, code: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(code)})
    if out.returncode:
        sys.exit(f"child failed ({code}, max {max(spec['lengths'])}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_flops(args, rows: int) -> None:
    """Model FLOPs of each configuration's step (train_batch.work: what the step must compute), no timing."""
    print(f"model {args.model}; {rows} sequences ({args.queries} prompts x {args.n}); model FLOPs of one training "
          f"step (forward + backward), each distinct prompt once")
    header = (f"{'max len':>8}{'prompt tok':>11}{'resp tok':>9}{'GFLOP':>9}{'MFLOP/resp tok':>15}{'vs shortest':>12}"
              f"{'attention':>10}")
    print(header)
    print("-" * len(header))
    base = None
    for longest in args.max_lengths:
        got = run_child({"model": args.model, "queries": args.queries, "n": args.n, "flops_only": True,
                         "lengths": skewed_lengths(rows, longest)}, ROOT)
        per_token = got["flops"] / got["tokens"] / 1e6
        base = base or per_token
        print(f"{longest:>8}{got['prompt_tokens']:>11}{got['tokens']:>9}{got['flops'] / 1e9:9.0f}{per_token:15.0f}"
              f"{per_token / base:11.2f}x{got['attention_flops'] / got['flops']:10.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny (the embedded model) or a model directory")
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-lengths", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--before", type=Path, default=None, help="another aent source tree to compare")
    ap.add_argument("--before-up-to", type=int, default=None,
                    help="run the --before tree only at maxima up to this (its padded step can be huge)")
    ap.add_argument("--micro-batch-tokens", type=int, nargs="+", default=[None],
                    help="trainer.micro_batch_tokens for the after tree (default: the config's, 4,096); "
                         "several values: one row each, interleaved")
    ap.add_argument("--flops-only", action="store_true", help="print each step's model FLOPs instead of timing it")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    rows = args.queries * args.n
    if args.flops_only:
        print_flops(args, rows)
        return
    budgets = args.micro_batch_tokens
    codes = ([("before", args.before.resolve(), None)] if args.before else []) + [
        ("after" if len(budgets) == 1 else f"after@{b}", ROOT, b) for b in budgets]
    results = {(name, m): [] for name, _, _ in codes for m in args.max_lengths}
    for _ in range(args.rounds):
        for longest in args.max_lengths:
            for name, code, budget in codes:
                if name == "before" and args.before_up_to and longest > args.before_up_to:
                    continue
                spec = {"model": args.model, "queries": args.queries, "n": args.n,
                        "micro_batch_tokens": budget,
                        "lengths": skewed_lengths(rows, longest)}
                got = run_child(spec, code)
                results[(name, longest)].append(got)
                print(f"  {name} max {longest}: {json.dumps(got)}", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"model {args.model}, fp32 CPU, 1 thread; {rows} sequences ({args.queries} prompts x {args.n}), 5% at the "
          f"maximum, the rest uniform in [max/16, max/4]; {args.rounds} round(s), medians; "
          f"load average {os.getloadavg()[0]:.1f}")
    prompt_tokens = next(r[0]["prompt_tokens"] for r in results.values() if r)
    budget = next(r[0]["micro_batch_tokens"] for (name, _), r in results.items() if name.startswith("after") and r)
    print(f"after: trainer.micro_batch_tokens {budget if len(budgets) == 1 else 'as named (after@N)'}")
    print(f"{prompt_tokens} prompt tokens (each of the {args.queries} distinct prompts counted once); peak MB: the "
          f"step's peak RSS above the process's before it, and the whole process's peak")
    header = (f"{'code':<11}{'max len':>8}{'resp tok':>9}{'step s':>8}{'ms/token':>9}{'vs shortest':>12}"
              f"{'peak MB':>9}{'proc MB':>9}{'ms/GFLOP':>9}")
    print(header)
    print("-" * len(header))
    for name, _, _ in codes:
        base = None
        for longest in args.max_lengths:
            got = results[(name, longest)]
            if not got:
                print(f"{name:<11}{longest:>8}  not run (--before-up-to {args.before_up_to})")
                continue
            seconds = statistics.median(r["seconds"] for r in got)
            per_token = 1000 * seconds / got[0]["tokens"]
            base = base or per_token
            print(f"{name:<11}{longest:>8}{got[0]['tokens']:>9}{seconds:8.2f}{per_token:9.3f}{per_token / base:11.2f}x"
                  f"{statistics.median(r['peak_mb'] for r in got):9.0f}"
                  f"{statistics.median(r['process_peak_mb'] for r in got):9.0f}"
                  f"{1e12 * seconds / got[0]['flops']:9.1f}")


if __name__ == "__main__":
    main()
