"""Structured configs: every hyper-parameter of a run, typed, in one place.

The values here are the one source of defaults. `conf/config.yaml` picks one file per group
(algo=aent, model=tiny, data=arithmetic, rollout=hf, ...) and each group file sets only what it changes
on top of these values (tests/test_config_defaults.py refuses a file that restates one). So the default
run is this schema plus conf/algo/aent.yaml (the AEnt band and coefficient tuned for the tiny model),
conf/model/tiny.yaml, conf/data/arithmetic.yaml and conf/rollout/hf.yaml; `aent config show` prints it.
The algo section's band and coefficient values here are the paper's (h_low 0.13, lambda in
[0.0006, 0.009]); they are what an algo group that sets none of them (grpo, clip_cov, ...) carries.
The paper's whole settings live in `experiments/`. Hydra checks types against these dataclasses and
`validate.py` checks ranges and choices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class CoefConfig:
    """The entropy coefficient lambda (eq. 4.1). `constant` keeps it at `init` (EntReg, ablations);
    `target` steps it by `delta` toward algo.target_entropy (TRL's adaptive entropy)."""
    mode: str = "adaptive"  # adaptive | constant | target
    init: float = 0.002
    min: float = 0.0006
    max: float = 0.009
    lr: float = 0.002  # beta, the coefficient learning rate
    # The first update happens at this global step; `start_epoch` (the paper's wording) converts to
    # steps from the dataset and batch sizes and wins when set.
    start_step: int = 0
    start_epoch: Optional[float] = None
    delta: float = 0.005  # mode=target: the fixed step up (entropy <= target) or down (TRL's default)


@dataclass
class AlgoConfig:
    name: str = "aent"
    advantage: str = "grpo"  # grpo | drgrpo
    adv_eps: float = 1e-6
    policy_loss: str = "ppo_clip"  # ppo_clip | reinforce | clip_cov | kl_cov | high_entropy_mask
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    dual_clip_c: Optional[float] = None  # dual-clip bound c > 1 for negative advantages; null = off
    loss_agg: str = "token_mean"  # token_mean | seq_mean_token_mean | seq_mean_token_sum_norm
    bonus: str = "clamped"  # none | full | clamped
    p: float = 0.33  # clamping percentage: the lowest floor(p * V) logits are dropped
    h_low: float = 0.13  # clamped-entropy band [h_low, h_high] the adaptive coefficient steers into
    h_high: float = 0.24
    coef: CoefConfig = field(default_factory=CoefConfig)
    kl_coef: float = 0.0  # KL penalty to the reference (initial) policy; 0 = off
    kl_estimator: str = "k3"  # k1 | k3
    # Other entropy controls (aent_cli/algos/entropy_controls.py); defaults are verl's / the papers'.
    cov_ratio: float = 2e-4  # clip_cov: fraction of valid tokens whose gradient is dropped
    cov_clip_lower: float = 1.0  # clip_cov: covariance band (lower, upper) the dropped tokens come from
    cov_clip_upper: float = 5.0
    kl_cov_ratio: float = 2e-4  # kl_cov: fraction of valid tokens (largest covariance) given the KL term
    kl_cov_coef: float = 1.0  # kl_cov: weight of |logp - old_logp| on those tokens
    target_entropy: float = 0.2  # coef.mode=target: mean per-token entropy (nats) to steer toward
    entropy_mask_rho: float = 0.2  # high_entropy_mask: fraction of tokens (highest entropy) with gradient


@dataclass
class ModelConfig:
    path: str = "tiny"  # "tiny" = the embedded warm-started model; else a local dir or hub id
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto (bfloat16 on a bf16-capable GPU, else float32)
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    prompt_template: str = "auto"  # auto | qwen_boxed | chat | plain
    # Positions per chunk when applying the LM head for log-probs and entropies (bounds memory).
    logit_chunk: int = 1024
    # Embedded model recipe (used only when path == "tiny").
    tiny_warmstart_steps: int = 500
    tiny_seed: int = 0


@dataclass
class DataConfig:
    train: str = "arithmetic"  # "arithmetic" (embedded task) | JSONL path | hub dataset id
    val: str = "arithmetic"
    train_split: str = "train"
    val_split: str = "test"
    problem_field: str = "problem"
    answer_field: str = "answer"
    val_size: int = 64  # held-out problems for val/acc (first N of the val set)
    arithmetic_train_size: int = 4096
    # Share of a + b * c problems in the embedded RL train split (the held-out split keeps the task's
    # 0.6): the warm-started model is ~1% right on them, and all-wrong groups carry no GRPO signal.
    arithmetic_hard_share: float = 0.3
    shuffle: bool = True
    word_problems_train_size: int = 4096  # data=word_problems: generated train problems (data/word_problems.py)
    word_problems_digits: int = 1  # 1: "What is 4 + 7?"; 2: two-to-three-digit word problems


@dataclass
class RolloutConfig:
    backend: str = "hf"  # hf | vllm
    n: int = 8  # responses per query (the GRPO group size G)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 = off
    max_new_tokens: int = 16
    # vLLM backend
    mode: str = "colocate"  # colocate | server
    server_url: str = "http://127.0.0.1:8000"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    sleep_between_phases: bool = True


@dataclass
class RewardConfig:
    # strict (last \boxed{}, required) | auto (boxed, else the stated final answer) | last_number;
    # null = each command's default: strict for `aent train` (reward and validation), auto for `aent eval`
    extractor: Optional[str] = None
    percent: str = "scale"  # scale: 25\% == 0.25 (Qwen2.5-Math's grader) | number: 25\% == 25 only
    correct: float = 1.0
    format_reward: float = 0.0  # added when an answer could be extracted at all
    timeout_s: float = 5.0  # hard limit per answer; a timeout scores 0 and is counted
    # Grading processes (a stuck math-verify check can only be stopped by killing its process);
    # 0 = one helper process, as 1.
    workers: int = 0


@dataclass
class TrainerConfig:
    # Sized for the embedded default on 2 CPU cores (README, "What the default shows").
    steps: int = 60  # global steps (Algorithm 1 iterations)
    batch_size: int = 8  # queries per step
    mini_batch_size: int = 8  # queries per optimiser step
    micro_batch_size: int = 64  # sequences per forward/backward (gradient accumulation below it)
    micro_batch_tokens: int = 4096  # and at most this many tokens per forward/backward (0 = no bound)
    ppo_epochs: int = 1  # mini-epochs over the batch
    lr: float = 1e-4  # one Adam step moves every weight by ~lr: larger values undo the warm start
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # torch CPU threads; 0 = torch's default (one per core). 1 by default: on a shared machine more threads
    # than free cores make each step many times slower (README, "Threads"; benchmarks/bench_threads.py).
    threads: int = 1
    backend: str = "torch"  # torch | deepspeed
    zero_stage: int = 2
    bf16: bool = False
    cpu_offload: bool = False
    val_every: int = 20  # steps between val/acc measurements (also at step 0 and the end); 0 = no validation
    val_n: int = 4  # samples per val problem (val/acc is avg@val_n; avg@4 as the paper reports)
    output_dir: str = "runs"
    run_name: Optional[str] = None
    checkpoint_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2
    resume: Optional[str] = None  # a run dir, one of its checkpoints/step_N folders, or "latest"
    resume_fallback: bool = False  # a damaged latest checkpoint: resume from the newest intact one
    stop_after: Optional[int] = None  # end the process after this step (to test resume)
    # entropy-collapse alarm: warn (and tag the MLflow run) once actor/entropy_collapse, the mean
    # token entropy of the last 5 steps over that of the first 5, falls below this; 0 = off
    entropy_collapse_fraction: float = 0.4


@dataclass
class EvalConfig:
    """`aent eval` (and the report's output folder). Sampling defaults are the paper's: avg@4 at
    temperature 0.6, top-p 0.95, top-k 20."""
    benchmarks: List[str] = field(default_factory=lambda: ["math500"])  # names, or `all`
    # AENT_DATA_DIR is the shared data root (as in conf/data/math.yaml); benchmark files live below it.
    data_dir: str = "${oc.env:AENT_DATA_DIR,../shared/data}/benchmarks"
    # Per-benchmark source instead of <data_dir>/<name>.jsonl: a JSONL path, a hub id, or `hub`.
    sources: Dict[str, str] = field(default_factory=dict)
    k: int = 4  # samples per problem: avg@k, pass@k, maj@k
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    max_new_tokens: int = 3072
    seed: int = 0
    limit: Optional[int] = None  # first N problems of each benchmark
    models: List[str] = field(default_factory=list)  # empty = model.path
    checkpoint: str = "best"  # for training-run models: best (val/acc) | final | all
    batch_size: int = 64  # prompts per generate call
    output_dir: str = "reports"


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # null = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    experiment: str = "aent"
    # Where the artifacts of experiments that aent creates go; null = beside the store (`mlruns/` next
    # to a SQLite file). An existing experiment keeps the location it was created with.
    artifact_location: Optional[str] = None
    # Steps between MLflow writes (metrics are buffered); a write also happens once 10 s have passed.
    log_every: int = 10


@dataclass
class AentConfig:
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # Free-form notes a preset can carry (e.g. where the paper's numbers come from).
    notes: Any = None
