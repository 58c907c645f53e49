"""Model FLOPs utilisation (MFU) of one aent training step: forward + backward + AdamW of the GRPO +
clamped-entropy (AEnt) loss on a fixed batch, with the achievable matmul rate measured in the same
process, on the step's own shapes, just before and just after the step.

    python benchmarks/bench_train_step.py                       # SmolLM2-135M-Instruct, 1 and 2 threads
    python benchmarks/bench_train_step.py --model tiny --queries 8 --n 8 --lengths 16 14 12 10 8 6 4 2
    python benchmarks/bench_train_step.py --checkpointing off on --before /tmp/aent-before
    python benchmarks/bench_train_step.py --device cuda --dtype bfloat16   # GPU MFU

The batch: `--queries` prompts of the MATH train split (the model's chat template; the arithmetic
task for the embedded model), `--n` responses each with the fixed `--lengths` (cycled), token ids
drawn uniformly from the vocabulary. Every configuration (threads x gradient checkpointing x code
tree) runs in a fresh child process, one after the other, `--rounds` times, so a machine shared with
other jobs slows them alike; each child measures its own matmul rate, so its MFU is against the
rate the machine gave it at that time. `--before DIR` also runs the same children against another
aent source tree (e.g. `git archive <commit> | tar -x -C DIR`).

Printed per configuration (median over rounds): seconds of forward (log-probs, entropies, loss),
backward and optimiser; the step; the forward-only log-prob pass (old log-probs / reference model:
`engine.update.measure`); the matmul rate; MFU of the step and of the forward-only pass; peak RSS
(or peak GPU memory). Model FLOPs: see `train_batch.work` (the required work; activation
recomputation is not counted; the per-sequence convention is printed too).
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def child(spec: dict) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    import train_batch as tb
    optimise, measure = tb.optimise, tb.measure  # either engine/update.py API (--before trees)

    device = spec["device"]
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    model, tokenizer, cfg = tb.load(spec["model"], spec["dtype"], spec["checkpointing"], device)
    chunk = spec["logit_chunk"] or cfg.model.logit_chunk
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = tb.make_batch(tb.prompts(spec["model"], tokenizer, cfg, spec["queries"]), spec["n"], spec["lengths"],
                          vocab, tokenizer.pad_token_id).to(device)
    advantages = torch.randn(batch.input_ids.shape[0], generator=torch.Generator().manual_seed(1)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    backend = tb.timed_backend(model, optimizer, device)
    kwargs = dict(temperature=1.0, chunk=chunk, group_size=spec["n"], mini_batch_queries=spec["queries"],
                  micro_batch_size=spec["micro_batch_size"], ppo_epochs=1, grad_clip=1.0,
                  max_response_length=max(spec["lengths"]))
    if spec.get("micro_batch_tokens") and "micro_batch_tokens" in inspect.signature(optimise).parameters:
        kwargs["micro_batch_tokens"] = spec["micro_batch_tokens"]
    algo = cfg.algo

    # warm-up on one group: allocator, kernels, the entropy kernel's compile cache
    optimise(model, backend, algo, batch.rows(slice(0, spec["n"])), advantages[:spec["n"]], None, None, 0.01,
             **{**kwargs, "mini_batch_queries": 1})
    work = tb.work(model, batch)
    rate_before = tb.matmul_rate(model, work["tokens"], work["scored"], device)
    backend.seconds = {"backward": 0.0, "optimizer": 0.0}
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tb.sync(device)
    started = time.perf_counter()
    optimise(model, backend, algo, batch, advantages, None, None, 0.01, **kwargs)
    tb.sync(device)
    step = time.perf_counter() - started
    model.train()
    started = time.perf_counter()
    measure(model, batch, 1.0, algo.p, chunk, spec["micro_batch_size"])
    tb.sync(device)
    forward_only = time.perf_counter() - started
    rate_after = tb.matmul_rate(model, work["tokens"], work["scored"], device)
    rate = max(rate_before, rate_after)  # the better of the two: MFU errs low, not high
    return {**work, "step_s": step, "backward_s": backend.seconds["backward"],
            "optimizer_s": backend.seconds["optimizer"],
            "forward_s": step - backend.seconds["backward"] - backend.seconds["optimizer"],
            "forward_only_s": forward_only, "rate": rate, "rate_before": rate_before, "rate_after": rate_after,
            "mfu": work["flops"] / (step * rate), "mfu_forward_only": work["flops"] / 3 / (forward_only * rate),
            "peak_mb": tb.peak_memory_mb(device), "load": os.getloadavg()[0]}


def dtype_rates(args) -> None:
    """The matmul rate of the step's shapes per dtype, interleaved, for each thread count."""
    import torch

    sys.path.insert(0, str(HERE))
    import train_batch as tb

    model, tokenizer, cfg = tb.load(args.model, "float32", False, args.device)
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = tb.make_batch(tb.prompts(args.model, tokenizer, cfg, args.queries), args.n, args.lengths, vocab,
                          tokenizer.pad_token_id)
    work = tb.work(model, batch)
    for n_threads in args.threads:
        torch.set_num_threads(n_threads)
        rates = {}
        for dtype in (torch.float32, torch.bfloat16) * 2:  # interleaved, best of two
            rate = tb.matmul_rate(model.to(dtype), work["tokens"], work["scored"], args.device)
            rates[dtype] = max(rates.get(dtype, 0.0), rate)
        print(f"{n_threads} thread(s): float32 {rates[torch.float32] / 1e9:.1f} GFLOP/s, bfloat16 "
              f"{rates[torch.bfloat16] / 1e9:.1f} GFLOP/s ({rates[torch.float32] / rates[torch.bfloat16]:.1f}x "
              f"slower); load average {os.getloadavg()[0]:.1f}")


def run_child(spec: dict, code: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True,
                         text=True)
    if out.returncode:
        sys.exit(f"child failed ({spec}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/aent/models/SmolLM2-135M-Instruct"),
                    help="a model directory, or tiny (the embedded model)")
    ap.add_argument("--queries", type=int, default=2)
    ap.add_argument("--n", type=int, default=4, help="responses per prompt")
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 48, 32, 16], help="response lengths, cycled")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--checkpointing", nargs="+", default=["off"], choices=["off", "on"])
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--logit-chunk", type=int, default=0, help="0: the config's model.logit_chunk")
    ap.add_argument("--micro-batch-size", type=int, default=64)
    ap.add_argument("--micro-batch-tokens", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--before", type=Path, default=None, help="another aent source tree to compare")
    ap.add_argument("--dtype-rates", action="store_true",
                    help="only print the matmul rate of the step's shapes in float32 and bfloat16")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.dtype_rates:
        dtype_rates(args)
        return
    if args.model != "tiny" and not (Path(args.model) / "config.json").is_file():
        sys.exit(f"--model {args.model}: not a model directory (build SmolLM2 with ../shared/models/smollm2.py)")
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    codes = ([("before", args.before.resolve())] if args.before else []) + [("after", ROOT)]
    threads = args.threads if args.device == "cpu" else [0]
    configs = list(itertools.product(codes, threads, args.checkpointing))
    results = {c: [] for c in configs}
    for _ in range(args.rounds):
        for config in configs:
            (_, code), n_threads, ckpt = config
            spec = {"model": args.model, "queries": args.queries, "n": args.n, "lengths": args.lengths,
                    "threads": n_threads, "checkpointing": ckpt == "on", "dtype": dtype, "device": args.device,
                    "logit_chunk": args.logit_chunk, "micro_batch_size": args.micro_batch_size,
                    "micro_batch_tokens": args.micro_batch_tokens}
            results[config].append(run_child(spec, code))
            print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    first = results[configs[0]][0]
    print(f"model {args.model}, {dtype}, {args.device}; {args.queries} prompts x {args.n} responses of "
          f"{args.lengths} tokens: {first['sequences']} sequences, {first['sequence_tokens']} prompt+response "
          f"tokens, {first['tokens']} through the layers (distinct prompts once), {first['scored']} scored; "
          f"model FLOPs {first['flops'] / 1e12:.3f} T required ({first['flops_per_sequence'] / 1e12:.3f} T "
          f"per-sequence convention); {args.rounds} round(s), medians; load average {os.getloadavg()[0]:.1f}")
    header = (f"{'code':<7}{'thr':>4} {'ckpt':>4} {'fwd s':>7} {'bwd s':>7} {'opt s':>6} {'step s':>7} "
              f"{'fwd-only s':>10} {'GFLOP/s':>8} {'MFU step':>9} {'MFU fwd-only':>12} {'peak MB':>8} {'load':>5}")
    print(header)
    print("-" * len(header))
    for config in configs:
        (name, _), n_threads, ckpt = config
        rows = results[config]

        def med(key):
            return statistics.median(r[key] for r in rows)

        print(f"{name:<7}{n_threads:>4} {ckpt:>4} {med('forward_s'):7.2f} {med('backward_s'):7.2f} "
              f"{med('optimizer_s'):6.2f} {med('step_s'):7.2f} {med('forward_only_s'):10.2f} {med('rate') / 1e9:8.1f} "
              f"{med('mfu'):9.1%} {med('mfu_forward_only'):12.1%} {med('peak_mb'):8.0f} {med('load'):5.1f}")


if __name__ == "__main__":
    main()
