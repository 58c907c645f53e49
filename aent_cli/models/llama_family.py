"""Llama-family decoders (Qwen2, Llama) as plain tensor functions on the model's own parameters.

The transformers modules spend most of a small model's forward in Python (module calls, mask and
cache objects); these functions do the same arithmetic (RMSNorm in fp32, rotary embeddings from
the model's own inverse frequencies, grouped-query SDPA, SwiGLU) with a few dozen tensor ops per
layer. Two users: the rollout's lean sampling loop (`rollout/lean.py`) and `shared_prefix_hidden`,
the training forward that computes each distinct prompt of a batch once for all its responses.
Models outside the family (`lean_supported` False) keep the transformers forward.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

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


def _distinct_prompts(input_ids: torch.Tensor, starts: List[int]) -> Tuple[List[List[int]], List[int]]:
    index: Dict[tuple, int] = {}
    of_row = [index.setdefault(tuple(input_ids[b, :s].tolist()), len(index)) for b, s in enumerate(starts)]
    return [list(key) for key in index], of_row


def shared_prefix_hidden(model, batch) -> Optional[torch.Tensor]:
    """Final hidden states [N, hidden] at the positions predicting the batch's N response tokens
    (row-major, `batch.response_mask` order), or None when this path does not apply.

    The same numbers as the model's forward over each prompt + response, but each distinct prompt
    (a GRPO group shares one) runs once and its keys and values serve all its responses, and the
    responses are not padded to the longest prompt + response: fewer positions through every layer.
    Gradients reach the shared prompt computation from every response that attends to it.
    """
    cfg = model.config
    starts = batch.response_start.tolist()
    t_width = batch.responses.shape[1]
    if (not lean_supported(model) or _checkpointing(model) or t_width < 2
            or min(starts) < 1 or (model.training and getattr(cfg, "attention_dropout", 0.0))):
        return None
    device = batch.input_ids.device
    prompts, of_row = _distinct_prompts(batch.input_ids, starts)
    n_prompts, p_width, r_width = len(prompts), max(starts), t_width - 1
    rows = len(starts)
    p_ids = torch.zeros((n_prompts, p_width), dtype=torch.long, device=device)
    p_valid = torch.zeros((n_prompts, p_width), dtype=torch.bool, device=device)
    for i, ids in enumerate(prompts):  # left-padded, so every prompt ends in the last column
        p_ids[i, p_width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        p_valid[i, p_width - len(ids):] = True
    of_row_t = torch.tensor(of_row, device=device)
    # the response tokens that are inputs: all but the last (it predicts nothing we score)
    r_ids = batch.responses[:, :r_width]
    p_pos = (p_valid.long().cumsum(-1) - 1).clamp(min=0)
    r_pos = p_valid.sum(-1)[of_row_t].unsqueeze(1) + torch.arange(r_width, device=device)
    cos_t, sin_t = rope_table(model, p_width + t_width, device)
    positions = torch.cat([p_pos.reshape(-1), r_pos.reshape(-1)])
    cos, sin = cos_t[positions].unsqueeze(1), sin_t[positions].unsqueeze(1)  # [N, 1, head_dim]
    n_p = n_prompts * p_width

    eye = torch.eye(p_width, dtype=torch.bool, device=device)
    p_mask = ((torch.ones_like(eye).tril() & p_valid[:, None, :]) | eye).unsqueeze(1)  # a pad query sees itself
    causal = torch.ones(r_width, r_width, dtype=torch.bool, device=device).tril()
    r_mask = torch.cat([p_valid[of_row_t][:, None, :].expand(rows, r_width, p_width),
                        causal.expand(rows, r_width, r_width)], dim=-1).unsqueeze(1)

    embed = model.model.embed_tokens.weight
    h = F.embedding(torch.cat([p_ids.reshape(-1), r_ids.reshape(-1)]), embed)  # [n_p + rows * r_width, hidden]
    gqa = cfg.num_attention_heads != cfg.num_key_value_heads

    def split(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # [N, heads, d] -> prompt, response blocks
        return (x[:n_p].view(n_prompts, p_width, *x.shape[1:]).transpose(1, 2),
                x[n_p:].view(rows, r_width, *x.shape[1:]).transpose(1, 2))

    for layer in model.model.layers:
        attn = layer.self_attn
        q, k, v = qkv(attn, rms_norm(h, layer.input_layernorm))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        (qp, qr), (kp, kr), (vp, vr) = split(q), split(k), split(v)
        out_p = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=p_mask, scale=attn.scaling, enable_gqa=gqa)
        out_r = F.scaled_dot_product_attention(
            qr, torch.cat([kp.index_select(0, of_row_t), kr], dim=2),
            torch.cat([vp.index_select(0, of_row_t), vr], dim=2), attn_mask=r_mask, scale=attn.scaling,
            enable_gqa=gqa)
        out = torch.cat([out_p.transpose(1, 2).reshape(n_p, -1), out_r.transpose(1, 2).reshape(rows * r_width, -1)])
        h = h + F.linear(out, attn.o_proj.weight, attn.o_proj.bias)
        h = h + mlp(layer, rms_norm(h, layer.post_attention_layernorm))

    last_prompt = h[:n_p].view(n_prompts, p_width, -1)[:, -1].index_select(0, of_row_t)  # predicts token 0
    per_row = torch.cat([last_prompt.unsqueeze(1), h[n_p:].view(rows, r_width, -1)], dim=1)  # [rows, T, hidden]
    return rms_norm(per_row[batch.response_mask.bool()], model.model.norm)
