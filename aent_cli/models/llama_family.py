"""Llama-family decoders (Qwen2, Llama) as plain tensor functions on the model's own parameters.

The transformers modules spend most of a small model's forward in Python (module calls, mask and
cache objects); these functions do the same arithmetic (RMSNorm in fp32, rotary embeddings from
the model's own inverse frequencies, grouped-query SDPA, SwiGLU) with a few dozen tensor ops per
layer, in one loop over the layers (`decoder_layers`). Two users: the rollout's lean sampling loop
(`rollout/lean.py`) and `shared_prefix_hidden`, the training forward that computes each group's
prompt once for all its responses.
Models outside the family (`lean_supported` False) keep the transformers forward.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from aent_cli.models.packing import pack_layout

_ARCHITECTURES = ("Qwen2ForCausalLM", "LlamaForCausalLM")
_STATIC_ROPE = (None, "default", "linear", "llama3", "yarn")  # inv_freq fixed at init (not dynamic)


def lean_supported(model) -> bool:
    """True when `model` is a Llama-family decoder these functions reproduce exactly."""
    cfg = getattr(model, "config", None)
    if type(model).__name__ not in _ARCHITECTURES or cfg is None:
        return False
    rope = getattr(cfg, "rope_parameters", None) or {}
    layer_types = getattr(cfg, "layer_types", None) or []
    return (getattr(cfg, "hidden_act", None) == "silu"
            and rope.get("rope_type") in _STATIC_ROPE
            and all(t == "full_attention" for t in layer_types)
            and getattr(cfg, "pretraining_tp", 1) == 1
            and hasattr(getattr(model, "model", None), "rotary_emb"))


def _checkpointing(model) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers 5 / 4 name
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def rope_table(model, length: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [length, head_dim] for positions 0 .. length - 1, as the model's rotary module makes them."""
    rotary = model.model.rotary_emb
    positions = torch.arange(length, device=device, dtype=torch.float32)
    freqs = positions[:, None] * rotary.inv_freq.to(device=device, dtype=torch.float32)
    emb = torch.cat((freqs, freqs), dim=-1)
    dtype = model.model.embed_tokens.weight.dtype
    return (emb.cos() * rotary.attention_scaling).to(dtype), (emb.sin() * rotary.attention_scaling).to(dtype)


def qkv(attn, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projections of x [..., hidden] split into heads: [..., heads, head_dim] each."""
    shape = (*x.shape[:-1], -1, attn.head_dim)
    return (F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(shape),
            F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(shape),
            F.linear(x, attn.v_proj.weight, attn.v_proj.bias).view(shape))


def mlp(layer, x: torch.Tensor) -> torch.Tensor:
    m = layer.mlp
    gated = F.silu(F.linear(x, m.gate_proj.weight, m.gate_proj.bias)) * F.linear(x, m.up_proj.weight, m.up_proj.bias)
    return F.linear(gated, m.down_proj.weight, m.down_proj.bias)


def _plain_qkv(i: int, layer, x: torch.Tensor):
    return qkv(layer.self_attn, x)


def _plain_mlp(i: int, layer, x: torch.Tensor) -> torch.Tensor:
    return mlp(layer, x)


def decoder_layers(
    model,
    h: torch.Tensor,
    rotary: Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]],
    attention: Callable[[int, torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    project_qkv: Callable = _plain_qkv,
    project_mlp: Callable = _plain_mlp,
) -> torch.Tensor:
    """The model's decoder layers on hidden states h [..., hidden] (before the final norm): per layer,
    h += o_proj(attention(rotary(q, k), v)) on RMSNorm(h), then h += SwiGLU(RMSNorm(h)).

    The callers differ only in how positions and keys are laid out, so those are arguments:
    `rotary(q, k)` rotates q, k [..., heads, head_dim] by their positions; `attention(i, attn, q, k, v)`
    returns layer i's attention output [..., heads * head_dim] (a KV cache in the rollout, packed
    segments in training); `project_qkv(i, layer, x)` / `project_mlp(i, layer, x)` may use fused
    weights. Used by `shared_prefix_hidden` and the rollout's `LeanDecoder`.
    """
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        q, k, v = project_qkv(i, layer, rms_norm(h, layer.input_layernorm))
        q, k = rotary(q, k)
        h = h + F.linear(attention(i, attn, q, k, v), attn.o_proj.weight, attn.o_proj.bias)
        h = h + project_mlp(i, layer, rms_norm(h, layer.post_attention_layernorm))
    return h


def _attention(attn, layout, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gqa: bool) -> torch.Tensor:
    """Attention outputs [N, heads * head_dim] of the flat q [N, heads, d], k, v [N, kv_heads, d],
    one SDPA call per bucket of segments (see `packing`)."""
    outs = []
    q_parts = torch.split(q, [b.q_total for b in layout.buckets])  # split, not slices: a cheap backward
    for bucket, q_part in zip(layout.buckets, q_parts):
        qb = q_part if bucket.q_index is None else q_part.index_select(0, bucket.q_index)
        qb = qb.view(bucket.count, bucket.q_width, *q.shape[1:]).transpose(1, 2)
        kb = k.index_select(0, bucket.k_index).view(bucket.count, bucket.k_width, *k.shape[1:]).transpose(1, 2)
        vb = v.index_select(0, bucket.k_index).view(bucket.count, bucket.k_width, *v.shape[1:]).transpose(1, 2)
        out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bucket.mask, is_causal=bucket.mask is None,
                                             scale=attn.scaling, enable_gqa=gqa)
        out = out.transpose(1, 2).reshape(bucket.count * bucket.q_width, -1)
        outs.append(out if bucket.valid is None else out.index_select(0, bucket.valid))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def shared_prefix_hidden(model, batch) -> Optional[torch.Tensor]:
    """Final hidden states [N, hidden] at the positions predicting the batch's N response tokens
    (row-major, `batch.response_mask` order), or None when this path does not apply.

    The same numbers as the model's forward over each prompt + response, without its waste: each
    distinct prompt (a GRPO group shares one) runs once and its keys and values serve all its
    responses, and no position is padding: the layers see one flat sequence of the batch's real
    tokens (`packing.pack_layout`), attention runs per bucket of similar-sized segments, and the
    final norm runs only where a response token is predicted. Gradients reach the shared prompt
    computation from every response that attends to it.
    """
    cfg = model.config
    starts = batch.response_start.tolist()
    if (not lean_supported(model) or _checkpointing(model) or batch.responses.shape[1] < 2
            or min(starts) < 1 or (model.training and getattr(cfg, "attention_dropout", 0.0))):
        return None
    device = batch.input_ids.device
    layout = pack_layout(batch)
    cos_t, sin_t = rope_table(model, int(layout.positions.max()) + 1, device)
    half = cos_t.shape[-1] // 2
    sin_t = torch.cat([-sin_t[:, :half], sin_t[:, half:]], dim=-1)  # rotate_half's sign folded in
    cos, sin = cos_t[layout.positions].unsqueeze(1), sin_t[layout.positions].unsqueeze(1)  # [N, 1, head_dim]
    gqa = cfg.num_attention_heads != cfg.num_key_value_heads

    h = F.embedding(layout.token_ids, model.model.embed_tokens.weight)  # [N, hidden]
    h = decoder_layers(
        model, h,
        rotary=lambda q, k: (q * cos + q.roll(half, -1) * sin, k * cos + k.roll(half, -1) * sin),  # = rotate()
        attention=lambda i, attn, q, k, v: _attention(attn, layout, q, k, v, gqa))
    return rms_norm(h.index_select(0, layout.scored), model.model.norm)
