"""trainer.backend=deepspeed: the optimiser step through a DeepSpeed engine (ZeRO stage 0-3, bf16,
CPU offload of optimiser states): engine/backend.py's TrainingBackend, like `torch_backend.TorchBackend`.

The trainer keeps calling the Hugging Face module directly (log-probs apply the LM head in chunks),
so two ZeRO-3 rules are kept here: every rank makes the same sequence of module calls (the number
of LM-head chunks is agreed by all-reduce), and generation runs on gathered weights with the
partitioning hooks removed, so ranks may generate different numbers of tokens.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Dict

import torch

from aent_cli.engine.backend import chunk_count
from aent_cli.engine.checkpoint import (checkpoint_dir, load_trainer_state, restore_checkpoint, rng_tensors,
                                        save_checkpoint, unsafe_load_reason, write_rank_rng)
from aent_cli.engine.collectives import all_reduce_max, barrier, gather_objects
from aent_cli.engine.distributed import DistEnv
from aent_cli.errors import UserError
from aent_cli.models.saving import save_model_dir

ZERO_DIR = "zero"  # checkpoints/zero/<tag>: DeepSpeed's own shards, next to the HF-format step dirs


_MISSING = "trainer.backend=deepspeed needs DeepSpeed: pip install 'aent-cli[gpu]' (or pip install deepspeed)"


def require_deepspeed() -> None:
    """Fail before any model is loaded (importing DeepSpeed itself takes seconds)."""
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError(_MISSING)


def import_deepspeed(device: torch.device):
    """DeepSpeed, told to use the CPU accelerator when training on CPU (it assumes CUDA otherwise)."""
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError:
        raise UserError(_MISSING) from None
    if device.type == "cpu":
        # The CPU accelerator JIT-builds a shared-memory all-reduce kernel (~2 minutes of C++ on a
        # fresh machine) that only speeds up CPU inference; gloo all-reduce is all training needs.
        compatible = getattr(getattr(deepspeed, "ops", None), "__compatible_ops__", None)
        if isinstance(compatible, dict):
            compatible["deepspeed_shm_comm"] = False
    return deepspeed


def deepspeed_config(trainer_cfg, device: torch.device) -> Dict[str, Any]:
    """The DeepSpeed JSON config for a TrainerConfig.

    Gradient accumulation is driven by the trainer (one optimiser step per mini-batch, boundaries
    set by hand), so DeepSpeed's own count is 1 and the loss arrives already scaled."""
    t = trainer_cfg
    zero: Dict[str, Any] = {"stage": int(t.zero_stage)}
    if t.cpu_offload:
        pin = device.type == "cuda"
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
        if t.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    config: Dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(t.micro_batch_size),
        "gradient_accumulation_steps": 1,
        "gradient_clipping": float(t.grad_clip),
        "zero_optimization": zero,
        "bf16": {"enabled": bool(t.bf16)},
        "steps_per_print": 2 ** 31 - 1,
        "wall_clock_breakdown": False,
    }
    if t.cpu_offload:  # offloaded states need DeepSpeed's CPU Adam, built from this section
        config["optimizer"] = {"type": "AdamW", "params": {
            "lr": float(t.lr), "betas": [float(b) for b in t.betas], "weight_decay": float(t.weight_decay)}}
    return config


def _zero_safe_globals() -> list:
    """The classes DeepSpeed pickles into its ZeRO checkpoints besides tensors and containers: the
    loss scaler, the ZeRO stage enum and the parameter-fragment records. Nothing else is unpickled."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_zero_load(path: str, map_location=None):
    """DeepSpeed's checkpoint_engine.load without arbitrary unpickling: torch.load(weights_only=True)
    with _zero_safe_globals allowed. A file holding anything else (a pickled payload) is a UserError
    naming it, before any of it runs."""
    with torch.serialization.safe_globals(_zero_safe_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError for a refused global; others for bad files
            raise UserError(f"resume: {path} cannot be loaded safely: {unsafe_load_reason(exc)}") from None


class HostCopy:
    """What save_model_dir reads from a model (config, generation_config, state_dict()), with the
    weights copied to CPU: DeepSpeed keeps them as views into flat buffers, which safetensors
    refuses to write. Tied weights stay one tensor, so the writer de-duplicates them as usual."""

    def __init__(self, model) -> None:
        self.config = model.config
        self.generation_config = getattr(model, "generation_config", None)
        copies: Dict[tuple, torch.Tensor] = {}
        self._state = {}
        for name, tensor in model.state_dict().items():
            key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
            if key not in copies:
                copies[key] = tensor.detach().to("cpu", copy=True)
            self._state[name] = copies[key]

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self._state


class DeepSpeedBackend:
    name = "deepspeed"

    def __init__(self, model, optimizer: torch.optim.Optimizer, trainer_cfg, env: DistEnv,
                 device: torch.device) -> None:
        self._ds = import_deepspeed(device)
        self.env, self.stage = env, int(trainer_cfg.zero_stage)
        self.lockstep = self.stage == 3  # partitioned weights: every rank makes the same module calls
        os.environ.setdefault("LOCAL_RANK", str(env.local_rank))  # DeepSpeed asserts it; plain runs lack it
        self._ds.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo",
                                  auto_mpi_discovery=False, verbose=False)
        config = deepspeed_config(trainer_cfg, device)
        client = None if trainer_cfg.cpu_offload else optimizer
        self.engine, self.optimizer, _, _ = self._ds.initialize(
            model=model, optimizer=client, config=config, dist_init_required=False,
            model_parameters=[p for p in model.parameters() if p.requires_grad] if client is None else None)
        self.model = self.engine.module

    def _offload(self):
        opt = self.engine.optimizer
        return opt.parameter_offload if hasattr(opt, "parameter_offload") else opt

    def zero_grad(self) -> None:
        pass  # engine.step() clears the gradients it consumed

    def backward(self, loss: torch.Tensor, last_micro: bool = True) -> None:
        # gradients are reduced across ranks only at the mini-batch's last micro-batch
        self.engine.set_gradient_accumulation_boundary(last_micro)
        self.engine.backward(loss)

    def step(self, grad_clip: float) -> float:
        manual = None
        if self.stage == 0 and not self.engine.bfloat16_enabled():
            # stage 0 fp32 clips without reporting the norm; gradients are already averaged here
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            manual = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float(manual or 0.0)

    def prepare_forward(self, n_tokens: int, chunk: int) -> int:
        """What engine.forward() does first, for the trainer's forwards that enter the module
        below its root: start a new micro-step for ZeRO's gradient accumulation (without it ZeRO-3
        overwrites instead of adding micro-batch gradients) and, under ZeRO-3, reset the
        parameter-prefetch trace. Returns the LM-head chunks every rank must run: ZeRO-3 gathers
        the head's weight at each chunk, so all ranks run as many (`lockstep` keeps
        response_token_stats on module calls: the shared-prefix path reads weights directly, and
        they are partitioned here)."""
        clear = getattr(self.engine.optimizer, "clear_backward_seen_flag", None)
        if callable(clear):
            clear()
        if self.stage != 3:
            return 0
        self._offload().get_param_coordinator().reset_step()
        return max(1, all_reduce_max(chunk_count(n_tokens, chunk), self.env))

    def _gathered(self):
        if self.stage != 3:
            return contextlib.nullcontext()
        return self._ds.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None)

    @contextlib.contextmanager
    def generation_context(self):
        """Stage 3: full weights on every rank and no partitioning hooks while generating (the way
        DeepSpeed's and TRL's unwrap_model_for_generation do); other stages hold full weights."""
        if self.stage != 3:
            yield
            return
        offload = self._offload()
        coordinator = offload.get_param_coordinator()
        with self._gathered():
            for hook in list(offload.forward_hooks) + list(offload.backward_hooks):
                hook.remove()
            offload.forward_hooks, offload.backward_hooks = [], []
            for param in self.model.parameters():
                param.ds_active_sub_modules.clear()
            # the root module's forward would reset the trace with a collective; ranks generate
            # different numbers of tokens, so no collective may run inside generate
            coordinator.reset_step = lambda: None
            try:
                yield
            finally:
                del coordinator.reset_step
                offload._register_deepspeed_module(offload.module)

    def save_checkpoint(self, run_dir: Path, step: int, tokenizer, state: Dict[str, Any], keep: int) -> Path:
        """ZeRO shards through DeepSpeed's API (every rank), then rank 0 commits the HF-format
        checkpoint whose trainer_state names the shards' tag; the `latest` pointer moves last."""
        zero_root = Path(run_dir) / "checkpoints" / ZERO_DIR
        tag = f"step_{step:06d}"
        self.engine.save_checkpoint(str(zero_root), tag=tag, save_latest=False)
        rngs = gather_objects(rng_tensors(), self.env)
        full_state = {**state, "world_size": self.env.world_size, "backend": self.name,
                      "zero_stage": self.stage, "zero_tag": tag}
        path = checkpoint_dir(run_dir, step)
        with self._gathered():
            if self.env.is_main:
                path = save_checkpoint(run_dir, step, HostCopy(self.model), tokenizer, None, full_state, keep,
                                       write_extra=lambda tmp: write_rank_rng(tmp, rngs))
        if self.env.is_main:
            kept = {p.name for p in zero_root.parent.glob("step_*") if p.is_dir()}
            for old in zero_root.glob("step_*"):
                if old.name not in kept:
                    shutil.rmtree(old, ignore_errors=True)
        barrier(self.env)
        return path

    def restore_checkpoint(self, ckpt: Path) -> Dict[str, Any]:
        state = load_trainer_state(ckpt)
        tag = state.get("zero_tag")
        zero_root = Path(ckpt).parent / ZERO_DIR
        if not tag or not (zero_root / tag).is_dir():
            raise UserError(f"resume: {ckpt} has no DeepSpeed ZeRO checkpoint (expected {zero_root}/{tag})")
        self.load_zero(zero_root, tag)
        return restore_checkpoint(ckpt, None, None, rank=self.env.rank)

    def load_zero(self, zero_root: Path, tag: str) -> None:
        """engine.load_checkpoint with every file read through safe_zero_load (never unpickling
        arbitrary objects: DeepSpeed's own loader uses torch.load(weights_only=False))."""
        engine = self.engine.checkpoint_engine
        engine.load = safe_zero_load  # an instance attribute over the class's unsafe method
        try:
            loaded, _ = self.engine.load_checkpoint(str(zero_root), tag=tag, load_optimizer_states=True,
                                                    load_lr_scheduler_states=False)
        finally:
            del engine.load
        if loaded is None:
            raise UserError(f"resume: DeepSpeed could not load {zero_root}/{tag}")

    def save_model(self, directory: Path, tokenizer) -> None:
        with self._gathered():
            if self.env.is_main:
                save_model_dir(HostCopy(self.model), tokenizer, directory)
        barrier(self.env)

    def close(self) -> None:
        destroy = getattr(self.engine, "destroy", None)
        if callable(destroy):
            destroy()
