"""Load a policy (model + tokenizer) from the `model` config: the embedded tiny model, a local
Hugging Face directory, or a hub id (for users online)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import torch

from aent_cli.errors import UserError
from aent_cli.models.tiny import ensure_tiny_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """`auto`: bfloat16 on a CUDA device that supports it, else float32. CPUs without native bf16
    matrix instructions multiply bf16 matrices far slower than fp32 (9.6x on this project's 2-core
    AMD EPYC at SmolLM2's shapes: 2.7 against 25.9 GFLOP/s, `bench_train_step.py --dtype-rates`),
    so a CPU run keeps fp32."""
    if name != "auto":
        return DTYPES[name]
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no CUDA device is available")
    return torch.device(name)


def resolve_model_path(model_cfg, progress_factory=None) -> str:
    """A directory or hub id to load; `tiny` builds (or finds cached) the embedded model."""
    path = str(model_cfg.path)
    if path == "tiny":
        return str(ensure_tiny_model(model_cfg.tiny_warmstart_steps, model_cfg.tiny_seed, progress_factory))
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"model.path={path}: not a Hugging Face model directory (no config.json)")
        check_weight_files(local, "model.path")
        return str(local)
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise UserError(f"model.path={path}: no such directory, and not a hub id of the form org/name")
    return path


def check_weight_files(directory, what: str) -> None:
    """UserError naming the first *.safetensors file in `directory` whose header safetensors cannot
    read: truncated (its header promises more bytes than the file holds), not a safetensors file, or
    empty. Reads the headers only (milliseconds); `what` starts the message (`model.path`)."""
    from safetensors import safe_open

    for file in sorted(Path(directory).glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # safetensors' own SafetensorError, or OSError
            reason = " ".join(str(exc).split())[:120]
            raise UserError(f"{what}: {file} is truncated or not a safetensors file\n  safetensors: {reason}") from None


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The tokenizer class the model directory names (AutoTokenizer would turn a custom fast
    tokenizer saved beside a Qwen2 config into a Qwen2Tokenizer that drops spaces)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(path) / "tokenizer_config.json"
    if config_file.is_file() and (Path(path) / "tokenizer.json").is_file():
        declared = json.loads(config_file.read_text()).get("tokenizer_class", "")
        if declared in ("PreTrainedTokenizerFast", "TokenizersBackend"):
            tok = PreTrainedTokenizerFast.from_pretrained(path)
        else:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    else:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_policy(model_cfg, device: torch.device | str = "cpu", progress_factory=None) -> Tuple[object, object]:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard bars would drown aent's own progress

    path = resolve_model_path(model_cfg, progress_factory)
    tokenizer = load_tokenizer(path, model_cfg.trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=resolve_dtype(model_cfg.dtype, device), trust_remote_code=model_cfg.trust_remote_code)
    except OSError as exc:
        raise UserError(f"model.path={model_cfg.path}: cannot load ({' '.join(str(exc).split())[:300]})") from None
    except Exception as exc:  # a weight file damaged past its header: safetensors' own error type
        if type(exc).__name__ != "SafetensorError":
            raise
        files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
        where = files[0] if len(files) == 1 else path
        fix = f"; delete {path} and it is built again" if model_cfg.path == "tiny" else ""
        raise UserError(f"model.path={model_cfg.path}: {where} cannot be read "
                        f"({' '.join(str(exc).split())[:160]}){fix}") from None
    model = model.to(device)
    broken = first_non_finite(model)
    if broken is not None:  # corrupted bytes past an intact header: NaN / inf weights, sampling would fail later
        raise UserError(f"model.path={model_cfg.path}: weight {broken} holds NaN or inf (a damaged weight file?)")
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model, tokenizer


def first_non_finite(model) -> Optional[str]:
    """The name of the first parameter with a NaN or inf value, or None (one pass over the weights, on
    their device)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_floating_point() and not bool(torch.isfinite(param).all()):
                return name
    return None
