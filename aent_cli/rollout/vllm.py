"""rollout.backend=vllm: rollouts from a vLLM engine, behind the same interface as `hf`.

colocate (default): an in-process engine on the training GPU, put to sleep (level 1: weights to CPU,
KV cache dropped) while the trainer runs, and loaded with the policy's weights after every
optimiser step. server: a separately started OpenAI-compatible vLLM server (`vllm serve <model>`),
asked for n completions per prompt on /v1/completions; it samples from its own weights, which the
user keeps up to date (aent does not push weights to a server).

vLLM is CUDA-only and optional: `pip install 'aent-cli[gpu]'`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import urllib.request
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from aent_cli.errors import UserError
from aent_cli.rollout.base import Completion, PromptCompletions, SamplingParams
from aent_cli.rollout.stops import stop_token_ids

_MISSING = "rollout.backend=vllm needs vLLM (CUDA only): pip install 'aent-cli[gpu]'"


def require_vllm() -> None:
    """Fail before any model is loaded when the colocated engine cannot exist."""
    if importlib.util.find_spec("vllm") is None:
        raise UserError(_MISSING)


def sampling_kwargs(params: SamplingParams, stop_ids: Sequence[int] = ()) -> Dict[str, Any]:
    """vllm.SamplingParams arguments for our SamplingParams, with nothing left to the model's own
    generation_config (as the hf backend: repetition penalty 1, top-k off unless asked). `stop_ids`:
    the end ids besides the tokenizer's EOS (which vLLM stops at by itself), as `stop_token_ids`."""
    greedy = params.temperature == 0
    extra = {"stop_token_ids": list(stop_ids)} if stop_ids else {}
    return {
        "n": params.n,
        "temperature": 0.0 if greedy else params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "top_k": -1 if greedy or params.top_k < 1 else params.top_k,
        "max_tokens": params.max_new_tokens,
        "seed": params.seed,
        "repetition_penalty": 1.0,
        "skip_special_tokens": True,
        **extra,
    }


def to_completion(token_ids: Iterable[int], finish_reason: Optional[str], stop_reason: Any, tokenizer,
                  stop_ids: Sequence[int] = ()) -> Completion:
    """A Completion whose ids end with the stop id when the model stopped by itself, as the hf
    backend's do (the trainer learns to emit it from them): EOS when vLLM stopped at EOS
    (stop_reason None), the id itself when it stopped at one of `stop_ids` (stop_reason that id)."""
    ids = list(token_ids)
    finished = finish_reason == "stop"
    eos = tokenizer.eos_token_id
    if finished and isinstance(stop_reason, int) and not isinstance(stop_reason, bool):
        if not ids or ids[-1] != stop_reason:
            ids.append(stop_reason)
    elif finished and stop_reason is None and eos is not None and (not ids or ids[-1] != eos):
        stop_ids = set(getattr(tokenizer, "all_special_ids", [eos])) | set(stop_ids)
        if not ids or ids[-1] not in stop_ids:
            ids.append(eos)
    return Completion(text=tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids, finished=finished)


def _encode(tokenizer, prompts: List[str]) -> List[List[int]]:
    return [tokenizer.encode(p, add_special_tokens=False) for p in prompts]


class VLLMRollout:
    def __init__(self, cfg, model, tokenizer) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        self.mode = cfg.mode
        # every end id but the tokenizer's EOS, which vLLM stops at by itself
        self.stop_ids = [i for i in stop_token_ids(tokenizer, model) if i != tokenizer.eos_token_id]
        self.needs_weight_sync = self.mode == "colocate"  # the trainer calls sync_weights after each step
        self.weight_syncs = 0
        self.llm = None
        self._asleep: set = set()
        if self.mode == "server":
            self.server = _ServerClient(cfg.server_url)
            return
        self.llm = self._start_engine(cfg, model)

    # --- colocated engine -------------------------------------------------------------------

    def _start_engine(self, cfg, model):
        require_vllm()
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if world > 1 and cfg.tensor_parallel_size > 1:
            raise UserError(f"rollout.tensor_parallel_size={cfg.tensor_parallel_size} with {world} training "
                            "processes: colocated vLLM runs one engine per rank (tensor_parallel_size=1)")
        if cfg.tensor_parallel_size == 1:
            # the engine in this process, so its model can be reached for weight loading
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        import vllm

        path = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
        if not path:
            raise UserError("rollout.backend=vllm: the policy has no model directory for vLLM to load")
        extra = {}
        if world > 1:  # one engine per training rank, joined to the launcher's process group
            extra["distributed_executor_backend"] = "external_launcher"
            extra["seed"] = torch.distributed.get_rank()
        return vllm.LLM(model=str(path), tokenizer=str(path), dtype=str(model.dtype).removeprefix("torch."),
                        tensor_parallel_size=cfg.tensor_parallel_size,
                        gpu_memory_utilization=cfg.gpu_memory_utilization,
                        enable_sleep_mode=cfg.sleep_between_phases, generation_config="vllm", **extra)

    def _wake(self, tags: Tuple[str, ...]) -> None:
        wanted = set(tags) & self._asleep
        if not wanted:
            return
        try:
            self.llm.wake_up(tags=sorted(wanted))
            self._asleep -= wanted
        except TypeError:  # vLLM without tagged wake-up: everything at once
            self.llm.wake_up()
            self._asleep.clear()

    def _sleep(self) -> None:
        if self.cfg.sleep_between_phases and not self._asleep:
            self.llm.sleep(level=1)  # weights to CPU, KV cache freed: the trainer gets the memory
            self._asleep = {"weights", "kv_cache"}

    def _engine_model(self):
        """The engine's torch module when it runs in this process (vLLM V0 or V1 in-process)."""
        executor = getattr(getattr(self.llm, "llm_engine", None), "model_executor", None)
        worker = getattr(executor, "driver_worker", None)
        worker = getattr(worker, "worker", worker)  # V1 wraps the worker once more
        runner = getattr(worker, "model_runner", None)
        return getattr(runner, "model", None)

    def sync_weights(self, model) -> None:
        """Load the policy's current weights into the engine (HF names; vLLM's load_weights maps
        them onto its fused layers)."""
        if self.mode != "colocate":
            return
        self._wake(("weights",))
        weights = ((name, tensor.detach()) for name, tensor in model.state_dict().items())
        target = self._engine_model()
        if target is not None:
            target.load_weights(weights)
        else:  # engine in other processes: ship the weights to every worker
            materialised = list(weights)
            self.llm.apply_model(lambda engine_model: engine_model.load_weights(materialised))
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):  # cached prefixes hold keys/values of the old weights
            reset()
        self.weight_syncs += 1

    def generate(self, prompts: List[str], params: SamplingParams) -> List[PromptCompletions]:
        prompt_ids = _encode(self.tokenizer, prompts)
        if self.mode == "server":
            raw = self.server.complete(prompt_ids, sampling_kwargs(params, self.stop_ids))
        else:
            import vllm

            self._wake(("weights", "kv_cache"))
            outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids],
                                        sampling_params=vllm.SamplingParams(**sampling_kwargs(params, self.stop_ids)),
                                        use_tqdm=False)
            self._sleep()
            raw = [[(o.token_ids, o.finish_reason, getattr(o, "stop_reason", None)) for o in out.outputs]
                   for out in outputs]
        results = []
        for prompt, ids, group in zip(prompts, prompt_ids, raw):
            if len(group) != params.n:
                raise RuntimeError(f"vLLM returned {len(group)} completions for a prompt, expected {params.n}")
            results.append(PromptCompletions(prompt=prompt, prompt_ids=ids, completions=[
                to_completion(tokens, finish, stop, self.tokenizer, self.stop_ids) for tokens, finish, stop in group]))
        return results

    def close(self) -> None:
        if self.llm is not None:
            shutdown = getattr(getattr(self.llm, "llm_engine", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None


class _ServerClient:
    """A vLLM OpenAI-compatible server's /v1/completions, asked for token ids back."""

    def __init__(self, url: str, timeout_s: float = 3600.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self._model: Optional[str] = None
        self._warned = False

    def _request(self, path: str, body: Optional[dict] = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except OSError as exc:
            raise UserError(f"rollout.server_url={self.url}: {exc}") from None

    def model(self) -> str:
        if self._model is None:
            self._model = self._request("/v1/models")["data"][0]["id"]
        return self._model

    def complete(self, prompt_ids: List[List[int]], kwargs: Dict[str, Any]) -> List[List[tuple]]:
        body = {key: value for key, value in kwargs.items() if value is not None}
        body.update(model=self.model(), prompt=prompt_ids, logprobs=0, return_tokens_as_token_ids=True,
                    return_token_ids=True)
        choices = sorted(self._request("/v1/completions", body)["choices"], key=lambda c: c["index"])
        n = kwargs["n"]
        grouped = []
        for i in range(len(prompt_ids)):
            group = []
            for choice in choices[i * n:(i + 1) * n]:
                ids = choice.get("token_ids")
                if ids is None:  # older servers: ids only through logprobs' "token_id:<id>" strings
                    ids = [int(tok.split(":", 1)[1]) for tok in choice["logprobs"]["tokens"]]
                group.append((ids, choice.get("finish_reason"), choice.get("stop_reason")))
            grouped.append(group)
        if not self._warned:
            warnings.warn("rollout.mode=server samples from the server's own weights; aent does not update them")
            self._warned = True
        return grouped
