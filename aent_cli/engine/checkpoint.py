"""Checkpoints: model (safetensors), optimizer (torch tensors, loaded with weights_only=True), RNG
states (safetensors) and everything else as plain JSON, written to a temporary folder and renamed,
so a crash mid-write never leaves a broken latest checkpoint."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from safetensors.torch import load_file, save_file

from aent_cli.errors import UserError
from aent_cli.models.loading import save_model_dir

LATEST = "latest"


def _rng_tensors() -> Dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = state
    return out


def _restore_rng(tensors: Dict[str, torch.Tensor], python_state: Any) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, internal, gauss = python_state
    random.setstate((version, tuple(internal), gauss))


def rng_tensors() -> Dict[str, torch.Tensor]:
    """This process's RNG states (data-parallel runs gather every rank's into the checkpoint)."""
    return _rng_tensors()


def write_rank_rng(directory: Path, per_rank: List[Dict[str, torch.Tensor]]) -> None:
    """rng_rank<r>.safetensors for ranks >= 1 (rank 0's states are rng.safetensors)."""
    for rank, tensors in enumerate(per_rank[1:], start=1):
        save_file(tensors, str(Path(directory) / f"rng_rank{rank}.safetensors"))


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def save_checkpoint(run_dir: Path, step: int, model, tokenizer, optimizer, state: Dict[str, Any], keep: int,
                    write_extra: Optional[Callable[[Path], None]] = None) -> Path:
    """`optimizer` None: its state lives elsewhere (DeepSpeed's ZeRO shards); `write_extra(tmp)` adds
    files (other ranks' RNG states) before the checkpoint is renamed into place."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model_dir(model, tokenizer, tmp)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
    if write_extra is not None:
        write_extra(tmp)
    full_state = {**state, "step": step, "python_random": list(random.getstate())}
    (tmp / "trainer_state.json").write_text(json.dumps(full_state, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    pointer_tmp = root / f".{LATEST}.tmp"
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, root / LATEST)
    _prune(root, keep, final.name)
    return final


def _prune(root: Path, keep: int, newest: str) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-keep]:
        if old.name != newest:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "trainer_state.json").is_file() else None


def find_run_dir(resume: str, output_dir: str) -> Path:
    """`resume` is a run directory, or "latest": the newest run under output_dir with a checkpoint."""
    if resume == "latest":
        candidates = [d for d in Path(output_dir).glob("*") if d.is_dir() and latest_checkpoint(d)]
        if not candidates:
            raise UserError(f"resume=latest: no run with a checkpoint under {output_dir}/")
        return max(candidates, key=lambda d: (latest_checkpoint(d) / "trainer_state.json").stat().st_mtime)
    run_dir = Path(resume).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"resume={resume}: no such run directory")
    if latest_checkpoint(run_dir) is None:
        raise UserError(f"resume={resume}: the run has no checkpoint to resume from")
    return run_dir


def load_trainer_state(ckpt: Path) -> Dict[str, Any]:
    return json.loads((ckpt / "trainer_state.json").read_text())


def restore_checkpoint(ckpt: Path, model, optimizer, rank: int = 0) -> Dict[str, Any]:
    """Load weights, optimizer and RNG states (this rank's) in place; return the JSON trainer state.
    model / optimizer None: restored elsewhere (DeepSpeed's load_checkpoint)."""
    if model is not None:
        for shard in sorted(ckpt.glob("model*.safetensors")):  # one file, or save_pretrained's shards
            model.load_state_dict(load_file(str(shard)), strict=False)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu"))
    state = load_trainer_state(ckpt)
    rng_file = ckpt / (f"rng_rank{rank}.safetensors" if rank else "rng.safetensors")
    _restore_rng(load_file(str(rng_file)), state["python_random"])
    return state
