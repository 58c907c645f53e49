"""Checkpoints: model (safetensors), optimizer (torch tensors, loaded with weights_only=True), RNG
states (safetensors) and everything else as plain JSON, written to a temporary folder and renamed,
so a crash mid-write never leaves a broken latest checkpoint.

trainer_state.json, written last, lists every other file with its size and SHA-256
(`files`), the SHA-256 of the run's config.yaml (`run_config`) and of its own content
(`state_sha256`), so a missing, truncated, replaced or hand-edited file is found before anything is
loaded (verify_checkpoint, verify_run_config), and weights load strictly: every tensor of the model present, none extra,
shapes equal (check_model_weights, restore_checkpoint)."""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aent_cli.errors import UserError
from aent_cli.models.saving import save_model_dir

LATEST = "latest"
STATE_DIGEST = "state_sha256"  # trainer_state.json's own content digest (the key itself left out)
RUN_CONFIG = "run_config"  # size and SHA-256 of the run folder's config.yaml when the checkpoint was written


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
    full_state = {**state, "step": step, "python_random": list(random.getstate()), "files": _manifest(tmp)}
    config = Path(run_dir) / "config.yaml"
    if config.is_file():  # written once, when the run starts: resume takes changes as overrides
        full_state[RUN_CONFIG] = {"bytes": config.stat().st_size, "sha256": _sha256(config)}
    full_state[STATE_DIGEST] = state_digest(full_state)
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


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest() if hasattr(hashlib, "file_digest") else _sha_loop(f)


def _sha_loop(f) -> str:  # Python 3.10
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 24), b""):
        digest.update(block)
    return digest.hexdigest()


def _manifest(directory: Path) -> Dict[str, Dict[str, Any]]:
    """{relative path: {"bytes": size, "sha256": hex}} for every file under directory."""
    return {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def state_digest(state: Dict[str, Any]) -> str:
    """SHA-256 of a trainer state's content (sorted-key JSON, without its own `state_sha256`): the
    same for any re-indentation of the file, different after any edit of a value."""
    body = {k: v for k, v in state.items() if k != STATE_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def verify_run_config(ckpt: Path) -> Optional[str]:
    """What is wrong with the run folder's config.yaml against the digest this checkpoint recorded
    ("config.yaml differs ..."), or None (also for checkpoints written before the digest)."""
    try:
        recorded = json.loads((Path(ckpt) / "trainer_state.json").read_text()).get(RUN_CONFIG)
    except (OSError, ValueError, AttributeError):
        return None  # verify_checkpoint names an unreadable trainer_state.json
    if not recorded:
        return None
    config = Path(ckpt).parent.parent / "config.yaml"
    if not config.is_file():
        return f"{config} is missing"
    if config.stat().st_size != recorded["bytes"] or _sha256(config) != recorded["sha256"]:
        return f"{config.parent.name}/config.yaml was edited after {Path(ckpt).name} was written (SHA-256 differs)"
    return None


def pointer_problem(run_dir: Path) -> Optional[str]:
    """Why the run's `checkpoints/latest` pointer cannot be followed ("checkpoints/latest names
    step_000009, which does not exist"), or None when it names an existing step folder or the run
    has no checkpoint at all."""
    root = Path(run_dir) / "checkpoints"
    if not step_checkpoints(run_dir):
        return None
    pointer = root / LATEST
    if not pointer.is_file():
        return "checkpoints/latest is missing"
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return "checkpoints/latest is unreadable"
    if not re.fullmatch(r"step_\d+", name):
        return f"checkpoints/latest holds {name[:40]!r}, not a checkpoint folder name"
    if not (root / name).is_dir():
        return f"checkpoints/latest names {name}, which does not exist"
    return None


def step_checkpoints(run_dir: Path) -> List[Path]:
    """The run's checkpoint folders, oldest first."""
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("step_*") if p.is_dir()) if root.is_dir() else []


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The checkpoint the `latest` pointer names, or (pointer lost) the newest step folder."""
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if pointer.is_file():
        try:
            path = pointer.parent / pointer.read_text().strip()
            if path.is_dir():
                return path
        except (OSError, UnicodeDecodeError, ValueError):  # garbage (a NUL byte: ValueError); pointer_problem names it
            pass
    steps = step_checkpoints(run_dir)
    return steps[-1] if steps else None


def find_run_dir(resume: str, output_dir: str) -> tuple[Path, Optional[Path]]:
    """(run directory, checkpoint) for `resume`: a run directory (its latest checkpoint), one of its
    checkpoint folders (runs/R/checkpoints/step_000002), or "latest": the newest run under
    output_dir with a checkpoint."""
    if resume == "latest":
        candidates = [d for d in Path(output_dir).glob("*") if d.is_dir() and latest_checkpoint(d)]
        if not candidates:
            raise UserError(f"resume=latest: no run with a checkpoint under {output_dir}/")
        run_dir = max(candidates, key=lambda d: latest_checkpoint(d).stat().st_mtime)
        return run_dir, latest_checkpoint(run_dir)
    path = Path(resume).expanduser()
    if path.is_dir() and path.parent.name == "checkpoints" and path.name.startswith("step_"):
        return path.parent.parent, path
    if not path.is_dir():
        raise UserError(f"resume={resume}: no such run directory")
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise UserError(f"resume={resume}: the run has no checkpoint to resume from")
    return path, ckpt


_REQUIRED_STATE = ("step", "python_random", "coef", "sampler", "mlflow_run_id")


def verify_checkpoint(ckpt: Path) -> Optional[str]:
    """What is wrong with this checkpoint's files ("model.safetensors: 1234 bytes, 5678 expected"),
    or None when every file is there, whole and unchanged. Reads and hashes; loads nothing."""
    state_file = Path(ckpt) / "trainer_state.json"
    if not state_file.is_file():
        return "trainer_state.json is missing"
    try:
        state = json.loads(state_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        return f"trainer_state.json is not valid JSON ({exc.__class__.__name__})"
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED_STATE):
        return "trainer_state.json lacks " + ", ".join(k for k in _REQUIRED_STATE if not isinstance(state, dict)
                                                       or k not in state)
    if STATE_DIGEST in state and state[STATE_DIGEST] != state_digest(state):
        return "trainer_state.json was edited after it was written (SHA-256 differs)"
    files = state.get("files")
    if files is not None and STATE_DIGEST not in state:  # every checkpoint with a manifest has its digest
        return f"trainer_state.json lacks its {STATE_DIGEST} (edited after it was written)"
    if files is None:  # written before manifests: the files the loaders need, readable headers
        return _verify_without_manifest(Path(ckpt), state)
    for name, meta in files.items():
        path = Path(ckpt) / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != meta["bytes"]:
            return f"{name} is {size} bytes, {meta['bytes']} were written (truncated or replaced)"
        if _sha256(path) != meta["sha256"]:
            return f"{name} differs from the file written (SHA-256 mismatch: replaced or corrupted)"
    return None


def _verify_without_manifest(ckpt: Path, state: Dict[str, Any]) -> Optional[str]:
    needed = ["rng.safetensors"] + ([] if state.get("backend") == "deepspeed" else ["optimizer.pt"])
    shards = sorted(ckpt.glob("model*.safetensors"))
    if not shards:
        return "model.safetensors is missing"
    for name in needed:
        if not (ckpt / name).is_file():
            return f"{name} is missing"
    for path in shards + [ckpt / "rng.safetensors"]:
        try:
            with safe_open(str(path), framework="pt") as f:
                list(f.keys())
        except Exception as exc:  # safetensors raises its own error types for bad headers
            return f"{path.name} is not a readable safetensors file ({' '.join(str(exc).split())[:120]})"
    return None


def unsafe_load_reason(exc: Exception) -> str:
    """The part of a refused torch.load(weights_only=True) that says why ("Unsupported global:
    GLOBAL pathlib.Path.touch"), else the error's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(exc).split()))
    found = re.search(r"Unsupported global: GLOBAL [\w.]+", text)
    return found.group(0) + " (pickled objects beyond tensors are never loaded)" if found else text[:160]


def load_trainer_state(ckpt: Path) -> Dict[str, Any]:
    return json.loads((ckpt / "trainer_state.json").read_text())


def check_model_weights(ckpt: Path, model) -> None:
    """Raise UserError unless the checkpoint's weight files hold exactly `model`'s tensors: every
    name present (a tied alias counts as present when one of its names is), none extra, shapes equal.
    Reads the safetensors headers only; `model` is the plain (not yet partitioned) module."""
    found: Dict[str, tuple] = {}
    shards = sorted(Path(ckpt).glob("model*.safetensors"))
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as f:
                for name in f.keys():
                    found[name] = tuple(f.get_slice(name).get_shape())
        except Exception as exc:
            raise UserError(f"resume: {shard} is not a readable safetensors file "
                            f"({' '.join(str(exc).split())[:120]})") from None
    expected = model.state_dict()
    aliases: Dict[tuple, List[str]] = {}
    for name, tensor in expected.items():
        aliases.setdefault((tensor.data_ptr(), tensor.dtype, tuple(tensor.shape)), []).append(name)
    missing = [names[0] for names in aliases.values() if not any(n in found for n in names)]
    extra = [name for name in found if name not in expected]
    wrong = [f"{n} {list(found[n])} (model: {list(expected[n].shape)})" for n in found
             if n in expected and found[n] != tuple(expected[n].shape)]
    if missing or extra or wrong:
        where = shards[0] if shards else Path(ckpt) / "model.safetensors"
        parts = [f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
                 if missing else "", f"{len(extra)} unexpected ({', '.join(extra[:3])}"
                 f"{', ...' if len(extra) > 3 else ''})" if extra else "",
                 f"{len(wrong)} of another shape ({'; '.join(wrong[:2])})" if wrong else ""]
        raise UserError(f"resume: {where} does not hold this model's weights: "
                        + ", ".join(p for p in parts if p))


def restore_checkpoint(ckpt: Path, model, optimizer, rank: int = 0) -> Dict[str, Any]:
    """Load weights (strictly: check_model_weights), optimizer and RNG states (this rank's) in place;
    return the JSON trainer state. model / optimizer None: restored elsewhere (DeepSpeed's
    load_checkpoint). A file that cannot be read is a UserError naming it."""
    if model is not None:
        check_model_weights(ckpt, model)
        for shard in sorted(ckpt.glob("model*.safetensors")):  # one file, or save_pretrained's shards
            model.load_state_dict(load_file(str(shard)), strict=False)  # names checked above
    if optimizer is not None:
        path = ckpt / "optimizer.pt"
        try:
            saved = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # not a torch file, or pickled objects beyond plain tensors
            raise UserError(f"resume: {path} cannot be loaded safely: {unsafe_load_reason(exc)}") from None
        optimizer.load_state_dict(saved)
    state = load_trainer_state(ckpt)
    rng_file = ckpt / (f"rng_rank{rank}.safetensors" if rank else "rng.safetensors")
    _restore_rng(load_file(str(rng_file)), state["python_random"])
    return state
