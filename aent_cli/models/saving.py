"""Writing a model directory that `from_pretrained` (and `aent eval --model DIR`) reads back."""
from __future__ import annotations

from pathlib import Path


def save_model_dir(model, tokenizer, path) -> None:
    """An ordinary Hugging Face model directory (config, safetensors weights, tokenizer).

    Written without `save_pretrained`, which imports DeepSpeed when it is installed (~15 s per save
    on CPU); `save_model` de-duplicates tied weights the way from_pretrained expects.
    """
    from safetensors.torch import save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)
    save_model(model, str(path / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(path)
