"""Structured configs: every hyper-parameter of a run, typed, in one place.

The YAML files under `conf/` fill these dataclasses; Hydra checks types against them, and
`validate.py` checks ranges. Defaults here are the embedded tiny run; the paper's settings live in
`experiments/`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional


@dataclass
class CoefConfig:
    """The entropy coefficient lambda (eq. 4.1). `constant` keeps it at `init` (EntReg, ablations)."""
    mode: str = "adaptive"  # adaptive | constant
    init: float = 0.002
    min: float = 0.0006
    max: float = 0.009
    lr: float = 0.002  # beta, the coefficient learning rate
    # The first update happens at this global step; `start_epoch` (the paper's wording) converts to
    # steps from the dataset and batch sizes and wins when set.
    start_step: int = 0
    start_epoch: Optional[float] = None


@dataclass
class AlgoConfig:
    name: str = "aent"
    advantage: str = "grpo"  # grpo | drgrpo
    adv_eps: float = 1e-6
    policy_loss: str = "ppo_clip"  # ppo_clip | reinforce
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


@dataclass
class ModelConfig:
    path: str = "tiny"  # "tiny" = the embedded warm-started model; else a local dir or hub id
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    prompt_template: str = "auto"  # auto | qwen_boxed | chat | plain
    # Positions per chunk when applying the LM head for log-probs and entropies (bounds memory).
    logit_chunk: int = 1024
    # Embedded model recipe (used only when path == "tiny").
    tiny_warmstart_steps: int = 1200
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
    shuffle: bool = True


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
    extractor: str = "boxed"  # boxed | last_number
    correct: float = 1.0
    format_reward: float = 0.0  # added when an answer could be extracted at all
    timeout_s: float = 5.0  # hard limit per answer; a timeout scores 0 and is counted
    workers: int = 0  # grading processes; 0 = grade in a helper thread of this process


@dataclass
class TrainerConfig:
    steps: int = 30  # global steps (Algorithm 1 iterations)
    batch_size: int = 8  # queries per step
    mini_batch_size: int = 8  # queries per optimiser step
    micro_batch_size: int = 64  # sequences per forward/backward (gradient accumulation below it)
    ppo_epochs: int = 1  # mini-epochs over the batch
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = torch's default
    backend: str = "torch"  # torch | deepspeed
    zero_stage: int = 2
    bf16: bool = False
    cpu_offload: bool = False
    val_every: int = 10  # steps between val/acc measurements (and at step 0 and the end)
    val_n: int = 1  # samples per val problem
    output_dir: str = "runs"
    run_name: Optional[str] = None
    checkpoint_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2
    resume: Optional[str] = None  # a run dir, or "latest"
    stop_after: Optional[int] = None  # end the process after this step (to test resume)


@dataclass
class EvalConfig:
    benchmarks: List[str] = field(default_factory=lambda: ["math500"])
    data_dir: str = "${oc.env:AENT_DATA_DIR,../shared/data/benchmarks}"
    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    max_new_tokens: int = 3072
    limit: Optional[int] = None
    models: List[str] = field(default_factory=list)
    batch_size: int = 64
    output_dir: str = "reports"


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # null = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    experiment: str = "aent"
    log_every: int = 1


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
