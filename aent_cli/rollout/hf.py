"""Rollouts with transformers `generate` (KV cache), sampling parameters set explicitly so a model's
own generation_config (repetition penalty, default top-k 50, ...) never changes the policy sampled."""
from __future__ import annotations

from typing import List, Optional

import torch

from aent_cli.rollout.base import Completion, PromptCompletions, SamplingParams


class HFRollout:
    def __init__(self, model, tokenizer, max_batch: Optional[int] = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch = max_batch  # sequences per generate call; None = all at once

    def _generation_config(self, params: SamplingParams):
        from transformers import GenerationConfig

        greedy = params.temperature == 0
        return GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None if greedy or params.top_k < 1 else params.top_k,
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=1.0,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            bos_token_id=None,
        )

    @torch.no_grad()
    def generate(self, prompts: List[str], params: SamplingParams) -> List[PromptCompletions]:
        tok = self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        device = next(self.model.parameters()).device
        ids = enc["input_ids"].repeat_interleave(params.n, dim=0).to(device)
        attn = enc["attention_mask"].repeat_interleave(params.n, dim=0).to(device)
        config = self._generation_config(params)
        was_training = self.model.training
        self.model.eval()
        step = self.max_batch or ids.shape[0]
        outputs = []
        for start in range(0, ids.shape[0], step):
            out = self.model.generate(input_ids=ids[start:start + step], attention_mask=attn[start:start + step],
                                      generation_config=config)
            outputs.extend(out[:, ids.shape[1]:].tolist())
        self.model.train(was_training)

        results = []
        for i, prompt in enumerate(prompts):
            row_mask = enc["attention_mask"][i].bool()
            group = PromptCompletions(prompt=prompt, prompt_ids=enc["input_ids"][i][row_mask].tolist())
            for generated in outputs[i * params.n:(i + 1) * params.n]:
                group.completions.append(self._completion(generated))
            results.append(group)
        return results

    def _completion(self, generated: List[int]) -> Completion:
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        if eos in generated:
            cut = generated[:generated.index(eos) + 1]
            finished = True
        else:
            cut = generated
            # generate pads finished rows; without EOS the row ran to max_new_tokens (pad == eos aside)
            while cut and cut[-1] == pad and pad != eos:
                cut = cut[:-1]
            finished = False
        text = self.tokenizer.decode(cut, skip_special_tokens=True)
        return Completion(text=text, token_ids=cut, finished=finished)

    def sync_weights(self, model) -> None:
        self.model = model  # shares the training model's parameters

    def close(self) -> None:
        pass
