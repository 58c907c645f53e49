"""The embedded default model: a ~1M-parameter Qwen2 with a character tokenizer, warm-started by
supervised training on the arithmetic task, cached by recipe so later runs start at once.

Everything is built locally from a config: no download. The result is an ordinary Hugging Face
model directory (config.json, model.safetensors, tokenizer.json), loaded like any other model.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from filelock import FileLock

from aent_cli.cache import cache_root
from aent_cli.data.arithmetic import TASK_VERSION, arithmetic_problems, direct_response, worked_response
from aent_cli.errors import UserError
from aent_cli.models.saving import save_model_dir

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
VOCAB_SIZE = 2048  # BPE on the task's own text: digits stay single tokens, words and syntax merge
TOKENIZER_CORPUS = 20000  # warm-start-style lines the BPE merges are learned from
ARCH = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)
RECIPE_VERSION = 4
# The warm start answers this share of its examples directly (a solver that forgets the carry, see
# data/arithmetic.py) and the rest worked out units-then-tens (always right): the most likely answer
# path is only partly right, the less likely one right more often.
DIRECT_SHARE = 0.7
# Like a pretrained base model, the warm start keeps a floor of probability on every token (label
# smoothing: this share of each target's mass spread over the vocabulary), so the bottom of the
# vocabulary carries a measurable share of the probability and of the entropy: what the clamped
# entropy leaves out, and what RL (and the ordinary entropy bonus) act on.
LABEL_SMOOTHING = 0.03


def recipe(steps: int, seed: int) -> dict:
    return {"arch": ARCH, "vocab": VOCAB_SIZE, "task": TASK_VERSION, "steps": steps, "seed": seed,
            "batch": 64, "lr": 3e-3, "direct_share": DIRECT_SHARE,
            "label_smoothing": LABEL_SMOOTHING, "version": RECIPE_VERSION}


def recipe_key(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]


def _tokenizer_corpus():
    problems = arithmetic_problems(TOKENIZER_CORPUS, 0, "warmstart")
    for i, prob in enumerate(problems):
        yield prob.problem + (direct_response(prob.problem) if i % 2 else worked_response(prob.problem))


def build_tokenizer():
    """A byte-level BPE fast tokenizer (VOCAB_SIZE tokens) trained on the task's own text, digits
    split one per token; round-trips any text exactly. Deterministic: the same vocabulary each build."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[PAD, EOS, UNK], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   padding_side="left")


def build_model(tokenizer, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=True, rope_theta=10000.0,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, **ARCH)
    return Qwen2ForCausalLM(config)


def _sft_batch(tokenizer, problems, direct):
    """Left-padded prompt+response+EOS ids, with labels only on the response (and EOS)."""
    rows, labels = [], []
    for prob, is_direct in zip(problems, direct):
        response = direct_response(prob.problem) if is_direct else worked_response(prob.problem)
        p_ids = tokenizer.encode(prob.problem, add_special_tokens=False)
        r_ids = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
        rows.append(p_ids + r_ids)
        labels.append([-100] * len(p_ids) + r_ids)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    lab = torch.tensor([[-100] * (width - len(r)) + r for r in labels])
    attn = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    return ids, lab, attn


def warm_start(model, tokenizer, steps: int, seed: int, progress: Optional[Callable[[int, float], None]] = None):
    """Supervised training on fresh arithmetic problems (held-out test prompts excluded)."""
    rec = recipe(steps, seed)
    batch = rec["batch"]
    problems = arithmetic_problems(steps * batch, seed + 1, "warmstart")
    style = random.Random(seed + 17)
    direct = [style.random() < rec["direct_share"] for _ in problems]
    opt = torch.optim.AdamW(model.parameters(), lr=rec["lr"], weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    for step in range(steps):
        rows = slice(step * batch, (step + 1) * batch)
        ids, lab, attn = _sft_batch(tokenizer, problems[rows], direct[rows])
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1),
                                                 ignore_index=-100, label_smoothing=rec["label_smoothing"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress is not None:
            progress(step + 1, loss.item())
    model.eval()
    return model


def ensure_tiny_model(steps: int, seed: int, progress_factory=None) -> Path:
    """Path of the cached warm-started model for this recipe, building it on first use.

    Built under a file lock, so concurrent first runs (a sweep's jobs, test workers) build it once and
    the others wait for it; written to a temporary folder and renamed into place, so an interrupted
    warm start never leaves a half-written model behind.
    """
    rec = recipe(steps, seed)
    target = cache_root() / f"tiny-{recipe_key(rec)}"
    if (target / "recipe.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # AENT_CACHE_DIR names a file, or a folder that cannot be made
        raise UserError(f"cannot use the cache folder {target.parent}: {exc.strerror or exc} "
                        "(set AENT_CACHE_DIR to a writable folder)") from None
    with FileLock(f"{target}.lock"):
        if not (target / "recipe.json").is_file():  # not built by another process while this one waited
            if target.exists():  # a partial copy (no recipe.json): kept aside, the rename needs the name
                target.rename(target.with_name(f"{target.name}.incomplete-{int(time.time())}"))
            _build(target, rec, steps, seed, progress_factory)
    return target


def _build(target: Path, rec: dict, steps: int, seed: int, progress_factory) -> None:
    rng_state = (random.getstate(), torch.get_rng_state())
    started = time.time()
    progress = progress_factory(steps) if progress_factory else None  # its first line comes now
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    warm_start(model, tokenizer, steps, seed, progress)
    random.setstate(rng_state[0])
    torch.set_rng_state(rng_state[1])
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        save_model_dir(model, tokenizer, tmp)
        (tmp / "recipe.json").write_text(json.dumps({**rec, "warmstart_seconds": time.time() - started}, indent=2))
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
