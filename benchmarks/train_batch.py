"""Shared pieces of the training-step benchmarks (`bench_train_step.py`, `bench_lengths.py`).

A fixed GRPO batch (real prompts, response token ids drawn at fixed lengths), the model FLOPs of a
training step on it, the achievable matmul rate on the model's own shapes, and a training backend
that times backward and the optimiser step. Only APIs that older aent trees also have are used, so
a benchmark can run the same child code against another checkout (`--before DIR`): `optimise` and
`measure` below take the older keyword form and call whichever engine/update.py API the tree has.
"""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch

SMOLLM2 = "~/.cache/aent/models/SmolLM2-135M-Instruct"
MATH_TRAIN = "train/math_train.jsonl"


def data_dir() -> Path:
    """$AENT_DATA_DIR, else ../shared/data from the working directory (as conf/data/math.yaml),
    else /work/shared/data."""
    if "AENT_DATA_DIR" in os.environ:
        return Path(os.environ["AENT_DATA_DIR"])
    relative = Path("../shared/data")
    return relative if (relative / MATH_TRAIN).is_file() else Path("/work/shared/data")


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def load(model: str, dtype: str, checkpointing: bool, device: str):
    """(model, tokenizer, cfg) through aent's own loader; `model` is "tiny" or a model directory."""
    from aent_cli.config import compose_config
    from aent_cli.models.loading import load_policy

    overrides = ["model=tiny"] if model == "tiny" else ["model=hf", f"model.path={Path(model).expanduser()}"]
    overrides += [f"model.dtype={dtype}", f"model.gradient_checkpointing={str(checkpointing).lower()}",
                  "algo=aent", f"trainer.device={device}"]
    cfg = compose_config(overrides)
    policy, tokenizer = load_policy(cfg.model, torch.device(device))
    return policy, tokenizer, cfg


def prompts(model: str, tokenizer, cfg, count: int) -> List[List[int]]:
    """Token ids of `count` training prompts: the MATH train split with the model's chat template,
    or the arithmetic task for the embedded model (its character vocabulary cannot spell LaTeX)."""
    from aent_cli.data.prompts import render_prompt, resolve_template

    if model == "tiny":
        from aent_cli.data.arithmetic import arithmetic_problems

        problems = [p.problem for p in arithmetic_problems(count, 0, "train")]
    else:
        with open(data_dir() / MATH_TRAIN) as f:
            problems = [json.loads(next(f))["problem"] for _ in range(count)]
    template = resolve_template(cfg.model.prompt_template, tokenizer)
    texts = [render_prompt(p, template, tokenizer) for p in problems]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def make_batch(prompt_ids: Sequence[List[int]], n: int, lengths: Sequence[int], vocab: int, pad_id: int,
               seed: int = 0):
    """A SequenceBatch of len(prompt_ids) groups of n responses; row r (group-major) has
    lengths[r % len(lengths)] tokens drawn uniformly from the vocabulary (seeded)."""
    from aent_cli.models.logprobs import pack_sequences

    g = torch.Generator().manual_seed(seed)
    rows_p, rows_r = [], []
    for prompt in prompt_ids:
        for i in range(n):
            rows_p.append(list(prompt))
            length = lengths[len(rows_r) % len(lengths)]
            rows_r.append(torch.randint(0, vocab, (length,), generator=g).tolist())
    return pack_sequences(rows_p, rows_r, pad_id)


def work(model, batch) -> Dict[str, float]:
    """Token counts and model FLOPs of one training step (forward + backward) on `batch`.

    `required`: what the step must compute: the decoder layers on each distinct prompt once and on
    every response token that is an input (6 x layer parameters per token), the LM head on the
    scored positions only (6 x V x hidden each), attention 3 x 4 x heads x head_dim per (query, key)
    pair it needs (causal). Activation recomputation is not counted. `per_sequence`: the usual
    6 x all parameters x (prompt + response tokens of every sequence) + its attention, as if every
    row ran alone (what the issue's 1.4 TFLOP estimate counts).
    """
    cfg = model.config
    head = model.get_output_embeddings().weight
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    layer_params = total - embed.numel() - (0 if head is embed else head.numel())
    width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    starts = batch.response_start.tolist()
    lengths = batch.response_mask.sum(-1).long().tolist()
    distinct = {tuple(batch.input_ids[b, :s].tolist()) for b, s in enumerate(starts)}
    prompt_tokens = sum(len(p) for p in distinct)
    inputs = sum(max(n - 1, 0) for n in lengths)
    scored = sum(lengths)

    def causal_pairs(n: int) -> int:
        return n * (n + 1) // 2

    pairs = sum(causal_pairs(len(p)) for p in distinct)
    pairs += sum(m * s + causal_pairs(m) for s, m in ((s, max(n - 1, 0)) for s, n in zip(starts, lengths)))
    attention = 3 * 4 * width * cfg.num_hidden_layers * pairs
    required = 6 * layer_params * (prompt_tokens + inputs) + 6 * head.numel() * scored + attention
    seq_tokens = sum(s + n for s, n in zip(starts, lengths))
    per_sequence = 6 * total * seq_tokens + 3 * 4 * width * cfg.num_hidden_layers * sum(
        causal_pairs(s + n) for s, n in zip(starts, lengths))
    return {"sequences": len(starts), "tokens": prompt_tokens + inputs, "scored": scored,
            "sequence_tokens": seq_tokens, "flops": float(required), "flops_per_sequence": float(per_sequence),
            "attention_flops": float(attention)}


def matmul_rate(model, tokens: int, scored: int, device, repeats: int = 2) -> float:
    """FLOP/s of the step's own matrix products at this moment: every linear map of one decoder
    layer at `tokens` rows and the LM head at `scored` rows, forward (x W^T) and both backward
    products (grad x W, grad^T x x), in the model's dtype; the best of `repeats` timings."""
    dtype = next(model.parameters()).dtype
    layer = model.model.layers[0]
    shapes = [(tokens, m.in_features, m.out_features) for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    head = model.get_output_embeddings().weight
    shapes.append((scored, head.shape[1], head.shape[0]))
    best = 0.0
    tensors = [(torch.randn(m, k, dtype=dtype, device=device), torch.randn(n, k, dtype=dtype, device=device),
                torch.randn(m, n, dtype=dtype, device=device)) for m, k, n in shapes]
    flops = sum(3 * 2 * m * k * n for m, k, n in shapes)
    for attempt in range(repeats + 1):
        sync(device)
        started = time.perf_counter()
        for x, w, grad in tensors:
            torch.mm(x, w.t())
            torch.mm(grad, w)
            torch.mm(grad.t(), x)
        sync(device)
        if attempt:  # the first pass warms the library up
            best = max(best, flops / (time.perf_counter() - started))
    return best


def peak_memory_mb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> float:
    """Resets the kernel's resident-memory high-water mark (Linux); returns the RSS now, in MiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Resident-memory high-water mark since the last `reset_peak_rss`, in MiB."""
    return _status_mb("VmHWM")


def _torch_backend_class():
    try:
        from aent_cli.engine.torch_backend import TorchBackend
    except ImportError:  # older trees: engine/distributed.py held it
        from aent_cli.engine.distributed import TorchBackend
    return TorchBackend


def optimise(model, optimizer, algo, batch, advantages, old, ref_logp, coef: float, *, temperature: float, chunk: int,
             group_size: int, mini_batch_queries: int, micro_batch_size: int, ppo_epochs: int, grad_clip: float,
             max_response_length: int, micro_batch_tokens: int = 0):
    """engine.update.optimise in the older keyword form, on this tree's API (`optimizer`: a torch
    optimiser or a training backend). `group_size` is implied by the batch's groups on newer trees."""
    from aent_cli.engine import update

    if not hasattr(update, "UpdateSettings"):
        extra = {"micro_batch_tokens": micro_batch_tokens} if micro_batch_tokens else {}  # trees before it lack it
        return update.optimise(model, optimizer, algo, batch, advantages, old, ref_logp, coef, temperature=temperature,
                               chunk=chunk, group_size=group_size, mini_batch_queries=mini_batch_queries,
                               micro_batch_size=micro_batch_size, ppo_epochs=ppo_epochs, grad_clip=grad_clip,
                               max_response_length=max_response_length, **extra)
    settings = update.UpdateSettings(temperature=temperature, logit_chunk=chunk, mini_batch_groups=mini_batch_queries,
                                     micro_batch_size=micro_batch_size, max_response_length=max_response_length,
                                     micro_batch_tokens=micro_batch_tokens, ppo_epochs=ppo_epochs, grad_clip=grad_clip)
    backend = optimizer if hasattr(optimizer, "prepare_forward") else _torch_backend_class()(model, optimizer)
    return update.optimise(model, backend, algo, update.StepBatch(batch, advantages, old, ref_logp), coef,
                           settings).stats


def measure(model, batch, temperature: float, p: float, chunk: int, micro: int):
    """engine.update.measure in the older positional form, on this tree's API."""
    from aent_cli.engine import update

    if not hasattr(update, "UpdateSettings"):
        return update.measure(model, batch, temperature, p, chunk, micro)
    settings = update.UpdateSettings(temperature=temperature, logit_chunk=chunk, mini_batch_groups=1,
                                     micro_batch_size=micro, max_response_length=batch.responses.shape[1])
    return update.measure(model, batch, settings, p)


def timed_backend(model, optimizer, device):
    """A torch training backend that adds up the seconds of backward and of the optimiser step."""
    TorchBackend = _torch_backend_class()

    class Timed(TorchBackend):
        seconds = {"backward": 0.0, "optimizer": 0.0}

        def _timed(self, key, fn, *args):
            sync(device)
            started = time.perf_counter()
            out = fn(*args)
            sync(device)
            self.seconds[key] += time.perf_counter() - started
            return out

        def backward(self, loss, last_micro: bool = True) -> None:
            self._timed("backward", super().backward, loss, last_micro)

        def step(self, grad_clip: float) -> float:
            return self._timed("optimizer", super().step, grad_clip)

        def zero_grad(self) -> None:
            self._timed("optimizer", super().zero_grad)

    backend = Timed(model, optimizer)
    backend.seconds = {"backward": 0.0, "optimizer": 0.0}
    return backend
