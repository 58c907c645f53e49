"""Peak memory and time of one micro-batch forward + backward of the log-prob / entropy loss, with
the LM head applied in chunks (`response_token_stats`) and without (full [tokens, V] logits ->
log_softmax -> gather, plus the entropy), on a Qwen2 with the real vocabulary (V = 151,936), random
weights and a small body so it runs on CPU.

Each case runs in a fresh subprocess; its figure is the peak resident memory of the step alone
(the kernel's high-water mark is reset after the model and batch exist: /proc/self/clear_refs),
so model weights and import overhead are not counted. The chunked path's peak should stay flat as
the sequence grows (beyond the hidden states), the full path's grows with tokens x V.

    python benchmarks/bench_logprob_memory.py                      # lengths 256 1024 2048, batch 1
    python benchmarks/bench_logprob_memory.py --lengths 512 4096 --batch 2 --chunk 512
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VOCAB = 151_936
PROMPT = 32
TEMPERATURE = 1.0


def _rss_peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        return True
    except OSError:
        return False


def _full_logits_loss(model, batch, advantages):
    """The reference: the model's own forward (all logits), log_softmax, gather, entropy."""
    import torch

    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float() / TEMPERATURE
    t_width = batch.responses.shape[1]
    at = batch.response_start.unsqueeze(1) - 1 + torch.arange(t_width)
    picked = logits.gather(1, at.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # [B, T, V]
    logp_all = torch.log_softmax(picked, dim=-1)
    logp = logp_all.gather(-1, batch.responses.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    mask = batch.response_mask
    return -((logp * advantages[:, None] + 0.01 * entropy) * mask).sum() / mask.sum()


def _chunked_loss(model, batch, advantages, chunk):
    from aent_cli.models.logprobs import response_token_stats

    stats = response_token_stats(model, batch, TEMPERATURE, 0.0, want_full=True, want_clamped=False, chunk=chunk)
    mask = batch.response_mask
    return -((stats["logp"] * advantages[:, None] + 0.01 * stats["entropy"]) * mask).sum() / mask.sum()


def run_case(mode: str, length: int, batch_size: int, hidden: int, layers: int, chunk: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from aent_cli.models.logprobs import pack_sequences

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 32), num_key_value_heads=max(1, hidden // 64),
                         max_position_embeddings=PROMPT + length + 1, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).float().train()
    prompts = [torch.randint(0, VOCAB, (PROMPT,)).tolist() for _ in range(batch_size)]
    responses = [torch.randint(0, VOCAB, (length,)).tolist() for _ in range(batch_size)]
    batch = pack_sequences(prompts, responses, pad_id=0)
    advantages = torch.randn(batch_size)
    loss_fn = (lambda: _full_logits_loss(model, batch, advantages)) if mode == "full" else (
        lambda: _chunked_loss(model, batch, advantages, chunk))

    before = _rss_now_mb()
    exact = _reset_peak()
    started = time.perf_counter()
    loss_fn().backward()
    seconds = time.perf_counter() - started
    peak = _rss_peak_mb()
    return {"mode": mode, "length": length, "batch": batch_size, "seconds": seconds, "step_peak_mb": peak - before,
            "exact_peak": exact, "logits_mb": batch_size * length * VOCAB * 4 / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048], help="response tokens per row")
    parser.add_argument("--batch", type=int, default=1, help="sequences in the micro-batch")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=1024, help="model.logit_chunk: positions per LM-head chunk")
    parser.add_argument("--modes", nargs="+", default=["chunked", "full"], choices=["chunked", "full"])
    parser.add_argument("--case", nargs=2, metavar=("MODE", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:  # child: one measurement, printed as JSON
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.batch, args.hidden, args.layers, args.chunk)))
        return

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    print(f"Qwen2 V={VOCAB:,} hidden={args.hidden} layers={args.layers}, prompt {PROMPT} + response tokens, "
          f"batch {args.batch}, chunk {args.chunk}; one forward + backward of logp + entropy loss")
    print(f"{'mode':<8} {'resp tokens':>11} {'time s':>8} {'step peak MB':>13} {'full logits MB':>15}")
    rows = []
    for length in args.lengths:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--case", mode, str(length), "--batch", str(args.batch),
                   "--hidden", str(args.hidden), "--layers", str(args.layers), "--chunk", str(args.chunk)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"{mode:<8} {length:>11} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            flag = "" if row["exact_peak"] else "  (peak since process start)"
            print(f"{mode:<8} {length:>11} {row['seconds']:>8.2f} {row['step_peak_mb']:>13.0f} "
                  f"{row['logits_mb']:>15.0f}{flag}")
    # below one chunk the chunked path's peak grows with the chunk actually used; past it, it is flat
    for mode in args.modes:
        mine = [r for r in rows if r["mode"] == mode]
        if len(mine) >= 2:
            a, b = mine[-2], mine[-1]
            per_1k = (b["step_peak_mb"] - a["step_peak_mb"]) / ((b["length"] - a["length"]) * args.batch) * 1000
            print(f"{mode}: step peak grows {per_1k:.0f} MB per 1k more response tokens "
                  f"({a['length']} -> {b['length']})")


if __name__ == "__main__":
    main()
