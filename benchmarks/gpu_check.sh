#!/usr/bin/env bash
# GPU check: a few training steps (Algorithm 1: hf rollouts, GRPO advantages, the update, the lambda
# step) on a Qwen2.5-1.5B-shaped model with random weights built from a Qwen2Config (nothing is
# downloaded; a synthetic 151,936-token word-level tokenizer stands in for Qwen's), for algo grpo,
# entreg and aent: tokens/s, peak GPU memory, and the step-time ratio aent / grpo. Then, when
# DeepSpeed can be imported (or installed from a wheel in ${AENT_WHEELS:-wheels}/), two aent steps
# through trainer.backend=deepspeed at ZeRO-2 and ZeRO-3 (bf16, one process).
#
# Rewards are random 0/1 draws: with random weights no answer is ever right, and step time does not
# depend on which responses are rewarded. Only torch and transformers are needed: the aent pieces
# used (algos, models.logprobs, rollout.hf, engine.update, engine.torch_backend) import nothing else.
#
#   bash benchmarks/gpu_check.sh            one GPU (CUDA); under 8 minutes on an H100
#   bash benchmarks/gpu_check.sh --tiny     the same path end to end on CPU, tiny sizes (~1-2 min)
#
# DeepSpeed wheels for a machine without an index:  pip wheel --no-deps -w wheels deepspeed hjson \
#   msgpack ninja py-cpuinfo einops   (then carry wheels/ along)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=full
if [[ "${1:-}" == "--tiny" ]]; then SIZE=tiny; fi
WHEELS="${AENT_WHEELS:-wheels}"
if ! python -c "import deepspeed" >/dev/null 2>&1 && compgen -G "$WHEELS/deepspeed-*.whl" >/dev/null; then
  python -m pip install -q --no-index --find-links "$WHEELS" deepspeed \
    || echo "gpu_check: the DeepSpeed wheel did not install; its steps will be skipped"
fi
if [[ "$SIZE" == full ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - "$SIZE" <<'PY'
import importlib.util
import math
import os
import sys
import time

import torch

TINY = sys.argv[1] == "tiny"
if TINY:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
elif not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device (on CPU run it with --tiny)")
DEVICE = torch.device("cpu" if TINY else "cuda")

# aent's config dataclasses, loaded by path: the aent_cli.config package itself imports Hydra
spec = importlib.util.spec_from_file_location("aent_schema", "aent_cli/config/schema.py")
schema = importlib.util.module_from_spec(spec)
sys.modules["aent_schema"] = schema
spec.loader.exec_module(schema)

from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from aent_cli.algos.advantages import consecutive_groups, grpo_advantages  # noqa: E402
from aent_cli.algos.aggregation import masked_mean  # noqa: E402
from aent_cli.algos.coef import build_coef  # noqa: E402
from aent_cli.engine.distributed import LOCAL, init_distributed, shutdown  # noqa: E402
from aent_cli.engine.torch_backend import TorchBackend  # noqa: E402
from aent_cli.engine.update import StepBatch, UpdateSettings, optimise  # noqa: E402
from aent_cli.models.logprobs import pack_sequences  # noqa: E402
from aent_cli.rollout.base import SamplingParams  # noqa: E402
from aent_cli.rollout.hf import HFRollout  # noqa: E402

VOCAB = 151_936
if TINY:
    ARCH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1)
    QUERIES, GROUP, PROMPT, NEW, MICRO, STEPS, DTYPE = 2, 4, 16, 16, 8, 2, torch.float32
else:  # Qwen2.5-1.5B: 28 layers, hidden 1536, GQA 12/2 heads, tied embeddings
    ARCH = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                num_key_value_heads=2)
    QUERIES, GROUP, PROMPT, NEW, MICRO, STEPS, DTYPE = 8, 8, 128, 512, 8, 3, torch.bfloat16
CHUNK = 1024  # model.logit_chunk


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def tokenizer():
    """A word-level tokenizer over t0 .. t151935 (t0 pad, t1 EOS): real encode/decode, no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(VOCAB)}, unk_token="t2"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="t0", eos_token="t1", unk_token="t2",
                                   padding_side="left")


def build_model(dtype):
    torch.manual_seed(0)  # every algo starts from the same weights
    config = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=32768, rope_theta=1_000_000.0,
                         tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=1, **ARCH)
    with torch.device(DEVICE):
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).train()


def algo_config(name):
    """The paper's setting (a): p 0.33, band [0.13, 0.24], lambda 0.002 (EntReg: fixed), beta 0.002."""
    algo = schema.AlgoConfig(name=name, p=0.33, h_low=0.13, h_high=0.24)
    algo.coef = schema.CoefConfig(mode="adaptive", init=0.002, min=0.0006, max=0.009, lr=0.002, start_step=0)
    if name == "grpo":
        algo.bonus, algo.coef.mode, algo.coef.init = "none", "constant", 0.0
    elif name == "entreg":
        algo.bonus, algo.coef.mode = "full", "constant"
    return algo


def step(model, backend, rollout, algo, coef, prompts, gen, index):
    params = SamplingParams(n=GROUP, temperature=1.0, top_p=1.0, top_k=-1, max_new_tokens=NEW)
    sync()
    t0 = time.perf_counter()
    with backend.generation_context():
        groups = rollout.generate(prompts, params)
    sync()
    t1 = time.perf_counter()
    completions = [c for g in groups for c in g.completions]
    rewards = torch.randint(0, 2, (len(completions),), generator=gen).float()
    batch = pack_sequences([g.prompt_ids for g in groups for _ in g.completions], [c.token_ids for c in completions],
                           0).to(DEVICE)
    advantages = grpo_advantages(rewards, consecutive_groups(len(rewards), GROUP)).to(DEVICE)
    settings = UpdateSettings(temperature=1.0, logit_chunk=CHUNK, mini_batch_groups=QUERIES, micro_batch_size=MICRO,
                              max_response_length=NEW, ppo_epochs=1, grad_clip=1.0)
    update = optimise(model, backend, algo, StepBatch(batch, advantages), coef.value, settings)
    stats, measured = update.stats, update.measured
    clamped = float(masked_mean(measured["clamped_entropy"], batch.response_mask))
    coef.update(clamped, index)
    sync()
    t2 = time.perf_counter()
    finite = all(math.isfinite(v) for v in stats.values()) and math.isfinite(clamped)
    return {"rollout_s": t1 - t0, "update_s": t2 - t1, "step_s": t2 - t0,
            "response_tokens": float(batch.response_mask.sum()),
            "trained_tokens": float(batch.attention_mask.sum()), "finite": finite,
            "grad_norm": stats["grad_norm"], "clamped_entropy": clamped, "lambda": coef.value}


def run(name, backend_name="torch", zero_stage=2):
    ds = backend_name == "deepspeed"
    model = build_model(torch.float32 if ds else DTYPE)  # DeepSpeed keeps fp32 masters, computes in bf16
    tok = tokenizer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    if ds:
        from aent_cli.engine.deepspeed_backend import DeepSpeedBackend

        t = schema.TrainerConfig(backend="deepspeed", zero_stage=zero_stage, bf16=not TINY, micro_batch_size=MICRO,
                                 lr=1e-6, grad_clip=1.0, weight_decay=0.01)
        backend = DeepSpeedBackend(model, optimizer, t, init_distributed(LOCAL, DEVICE, single_process_group=True),
                                   DEVICE)
    else:
        backend = TorchBackend(model, optimizer, LOCAL)
    algo = algo_config(name)
    coef = build_coef(algo, 1)
    rollout = HFRollout(model, tok)
    gen = torch.Generator().manual_seed(1)
    prompts = [" ".join(f"t{i}" for i in torch.randint(3, VOCAB, (PROMPT,), generator=gen).tolist())
               for _ in range(QUERIES)]
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    steps = [step(model, backend, rollout, algo, coef, prompts, gen, i + 1) for i in range(STEPS if not ds else 2)]
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if DEVICE.type == "cuda" else float("nan")
    backend.close()
    del model, optimizer, backend, rollout
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
    timed = steps[1:] if len(steps) > 1 else steps  # the first step pays for warm-up
    mean = {k: sum(s[k] for s in timed) / len(timed) for k in ("rollout_s", "update_s", "step_s",
                                                                "response_tokens", "trained_tokens")}
    mean.update(peak_gib=peak, finite=all(s["finite"] for s in steps), lam=steps[-1]["lambda"],
                clamped=steps[-1]["clamped_entropy"], grad_norm=steps[-1]["grad_norm"])
    return mean


def show(label, r):
    print(f"{label:<16} {r['step_s']:>7.2f} {r['rollout_s']:>9.2f} {r['update_s']:>8.2f} "
          f"{r['response_tokens'] / r['step_s']:>10.0f} {r['trained_tokens'] / r['update_s']:>11.0f} "
          f"{r['peak_gib']:>9.1f} {r['clamped']:>8.3f} {r['lam']:>8.5f}  {'ok' if r['finite'] else 'NON-FINITE'}",
          flush=True)


import transformers  # noqa: E402

print(f"torch {torch.__version__}, transformers {transformers.__version__}, device "
      f"{torch.cuda.get_device_name() if DEVICE.type == 'cuda' else 'cpu'}; {'tiny' if TINY else 'Qwen2.5-1.5B'}"
      f"-shaped Qwen2, V={VOCAB:,}, {QUERIES} queries x {GROUP} responses, prompt {PROMPT}, up to {NEW} new "
      f"tokens, micro-batch {MICRO}, {DTYPE}".replace("torch.", ""))
print(f"{'run':<16} {'step s':>7} {'rollout s':>9} {'update s':>8} {'gen tok/s':>10} {'train tok/s':>11} "
      f"{'peak GiB':>9} {'H~':>8} {'lambda':>8}")
results = {}
for name in ("grpo", "entreg", "aent"):
    results[name] = run(name)
    show(name, results[name])
g, a = results["grpo"], results["aent"]
print(f"aent / grpo: step time {a['step_s'] / g['step_s']:.3f}, update time {a['update_s'] / g['update_s']:.3f}, "
      f"peak memory {a['peak_gib'] / g['peak_gib']:.3f}" if DEVICE.type == "cuda" else
      f"aent / grpo: step time {a['step_s'] / g['step_s']:.3f}, update time {a['update_s'] / g['update_s']:.3f}")

failed = [n for n, r in results.items() if not r["finite"]]
if importlib.util.find_spec("deepspeed") is None:
    print("DeepSpeed: not installed, its steps skipped")
else:
    for stage in (2, 3):
        label = f"aent ds zero{stage}"
        try:
            results[label] = run("aent", "deepspeed", stage)
            show(label, results[label])
            if not results[label]["finite"]:
                failed.append(label)
        except Exception as exc:  # report and go on: the torch-backend figures above still stand
            print(f"{label}: FAILED {type(exc).__name__}: {exc}", flush=True)
            failed.append(label)
    shutdown()
print("gpu_check: " + ("OK" if not failed else "FAILED: " + ", ".join(failed)))
sys.exit(1 if failed else 0)
PY
