"""Rollouts with transformers models (KV cache), sampling parameters set explicitly so a model's
own generation_config (repetition penalty, default top-k 50, ...) never changes the policy sampled.

Llama-family models (Qwen2, Llama) sample through the lean loop in `lean.py` (the same distribution
as `generate`, several times faster on small models); others through `generate`. Both stop a row at
any of the model's end ids (`stops.stop_token_ids`), and a completion keeps the id that ended it.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch

from aent_cli.rollout.base import Completion, PromptCompletions, SamplingParams
from aent_cli.rollout.lean import lean_sample, lean_supported
from aent_cli.rollout.stops import cut_at_stop, stop_token_ids


class HFRollout:
    def __init__(self, model, tokenizer, max_batch: Optional[int] = None, lean: bool = True) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch = max_batch  # sequences per generate call; None = all at once
        self.lean = lean  # False: always transformers `generate`
        self.stop_ids = stop_token_ids(tokenizer, model)  # EOS first
        self.on_tokens: Optional[Callable[[int], None]] = None  # progress: called with tokens generated per step

    def _generation_config(self, params: SamplingParams):
        from transformers import GenerationConfig

        greedy = params.temperature == 0
        return GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            # 0, not None: generate fills None from the model's generation_config or its global default (50)
            top_k=None if greedy else max(params.top_k, 0),
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=1.0,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=list(self.stop_ids) or None,
            bos_token_id=None,
        )

    @torch.no_grad()
    def generate(self, prompts: List[str], params: SamplingParams) -> List[PromptCompletions]:
        tok = self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        device = next(self.model.parameters()).device
        ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            if self.lean and lean_supported(self.model):
                completions = self._lean(ids, attn, params)
            else:
                generated = self._generate(ids.repeat_interleave(params.n, dim=0),
                                           attn.repeat_interleave(params.n, dim=0), params)
                completions = [self._completion(g) for g in generated]
        finally:
            self.model.train(was_training)

        results = []
        for i, prompt in enumerate(prompts):
            row_mask = enc["attention_mask"][i].bool()
            group = PromptCompletions(prompt=prompt, prompt_ids=enc["input_ids"][i][row_mask].tolist())
            group.completions.extend(completions[i * params.n:(i + 1) * params.n])
            results.append(group)
        return results

    def _generate(self, ids: torch.Tensor, attn: torch.Tensor, params: SamplingParams) -> List[List[int]]:
        config = self._generation_config(params)
        step = self.max_batch or ids.shape[0]
        outputs = []
        for start in range(0, ids.shape[0], step):
            out = self.model.generate(input_ids=ids[start:start + step], attention_mask=attn[start:start + step],
                                      generation_config=config, streamer=_streamer(self.on_tokens))
            outputs.extend(out[:, ids.shape[1]:].tolist())
        return outputs

    def _lean(self, ids: torch.Tensor, attn: torch.Tensor, params: SamplingParams) -> List[Completion]:
        # whole prompt groups per call, so each prompt is prefilled once for its n samples
        per_call = max(1, (self.max_batch or ids.shape[0] * params.n) // params.n)
        tok, out = self.tokenizer, []
        for start in range(0, ids.shape[0], per_call):
            generated, finished = lean_sample(
                self.model, ids[start:start + per_call], attn[start:start + per_call], params.n,
                temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                max_new_tokens=params.max_new_tokens, stop_ids=self.stop_ids, pad_id=tok.pad_token_id,
                on_tokens=self.on_tokens)
            out.extend(Completion(text=tok.decode(g, skip_special_tokens=True), token_ids=g, finished=f)
                       for g, f in zip(generated, finished))
        return out

    def _completion(self, generated: List[int]) -> Completion:
        # generate pads only rows that emitted a stop id; a row without one ran to max_new_tokens, and
        # a pad token in it was sampled like any other (it has a log-prob in the loss), so it stays
        cut, finished = cut_at_stop(generated, self.stop_ids)
        text = self.tokenizer.decode(cut, skip_special_tokens=True)
        return Completion(text=text, token_ids=cut, finished=finished)

    def sync_weights(self, model) -> None:
        self.model = model  # shares the training model's parameters

    def close(self) -> None:
        pass


def _streamer(on_tokens: Optional[Callable[[int], None]]):
    """A `generate` streamer that reports each step's new tokens to `on_tokens`: one per row of the
    batch, the pad tokens of rows already finished included (progress only; the lean loop counts
    only the rows still generating)."""
    if on_tokens is None:
        return None
    from transformers.generation.streamers import BaseStreamer

    class _Count(BaseStreamer):
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value) -> None:
            if not self.prompt_seen:  # the first call carries the prompt ids
                self.prompt_seen = True
                return
            on_tokens(int(value.numel()))

        def end(self) -> None:
            pass

    return _Count()
