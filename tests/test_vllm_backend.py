"""rollout.backend=vllm without vLLM (CUDA-only): a recording stand-in module takes vLLM's place, so
what is checked is our side of the interface: sampling parameters, prompt ids in and completions
out (EOS kept as the hf backend keeps it), sleep / wake between phases, the policy's weights loaded
after every optimiser step, the server mode's HTTP exchange, and one-line errors."""
from __future__ import annotations

import importlib.machinery
import json
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.config import compose_config, validate
from aent_cli.errors import UserError
from aent_cli.rollout import SamplingParams, build_rollout
from aent_cli.rollout.vllm import sampling_kwargs

EOS = None  # set from the tokenizer in the fixture


class FakeLLM:
    """Records what aent asks of vllm.LLM; completions echo the prompt's last ids."""
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self.loaded = kwargs, [], []
        runner = types.SimpleNamespace(model=types.SimpleNamespace(load_weights=self._load_weights))
        self.llm_engine = types.SimpleNamespace(
            model_executor=types.SimpleNamespace(driver_worker=types.SimpleNamespace(model_runner=runner)))
        FakeLLM.instances.append(self)

    def _load_weights(self, weights):
        self.calls.append("load_weights")
        self.loaded.append({name: tensor.clone() for name, tensor in weights})

    def sleep(self, level):
        self.calls.append(f"sleep{level}")

    def wake_up(self, tags=None):
        self.calls.append("wake:" + ",".join(tags or ["all"]))

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def generate(self, prompts, sampling_params, use_tqdm):
        self.calls.append("generate")
        self.prompts, self.params = prompts, sampling_params
        outs = []
        for prompt in prompts:
            tail = prompt["prompt_token_ids"][-3:]
            kinds = [(tail + [EOS], "stop"), (tail, "stop"), (tail, "length")]  # EOS kept / dropped / cut
            outputs = [types.SimpleNamespace(token_ids=tuple(kinds[j % 3][0]), finish_reason=kinds[j % 3][1],
                                             stop_reason=None) for j in range(sampling_params.kwargs["n"])]
            outs.append(types.SimpleNamespace(outputs=outputs))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kwargs: types.SimpleNamespace(kwargs=kwargs)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    FakeLLM.instances.clear()
    return module


@pytest.fixture(scope="module")
def policy(tiny_cache):
    from aent_cli.models.loading import load_policy

    global EOS
    model, tokenizer = load_policy(compose_config([]).model, "cpu")
    EOS = tokenizer.eos_token_id
    return model, tokenizer


def test_sampling_parameters_map_one_to_one():
    got = sampling_kwargs(SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=33, seed=5))
    assert got == {"n": 4, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "max_tokens": 33, "seed": 5,
                   "repetition_penalty": 1.0, "skip_special_tokens": True}
    assert sampling_kwargs(SamplingParams(top_k=-1))["top_k"] == -1  # off
    greedy = sampling_kwargs(SamplingParams(temperature=0, top_p=0.5, top_k=7))
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0.0, 1.0, -1)


def test_colocated_engine_samples_sleeps_and_loads_weights(fake_vllm, policy):
    model, tokenizer = policy
    cfg = compose_config(["rollout=vllm", "rollout.gpu_memory_utilization=0.3"]).rollout
    backend = build_rollout(cfg, model, tokenizer)
    llm = FakeLLM.instances[-1]
    assert llm.kwargs == {"model": model.name_or_path, "tokenizer": model.name_or_path, "dtype": "float32",
                          "tensor_parallel_size": 1, "gpu_memory_utilization": 0.3, "enable_sleep_mode": True,
                          "generation_config": "vllm"}
    import os
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # engine in-process: weights reachable

    prompts = ["12+34=", "5*6="]
    params = SamplingParams(n=3, temperature=0.8, top_p=0.95, top_k=-1, max_new_tokens=9, seed=11)
    groups = backend.generate(prompts, params)
    assert llm.prompts == [{"prompt_token_ids": tokenizer.encode(p, add_special_tokens=False)} for p in prompts]
    assert llm.params.kwargs == sampling_kwargs(params)
    for group, prompt in zip(groups, prompts):
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        assert group.prompt == prompt and group.prompt_ids == ids
        first, second, third = group.completions
        assert first.token_ids == ids[-3:] + [EOS] and first.finished
        assert second.token_ids == ids[-3:] + [EOS] and second.finished  # EOS-stop: EOS restored
        assert third.token_ids == ids[-3:] and not third.finished  # cut at max_tokens: no EOS
        assert third.text == tokenizer.decode(ids[-3:], skip_special_tokens=True)
    assert llm.calls == ["generate", "sleep1"]  # the trainer gets the memory back

    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # an optimiser step
    backend.sync_weights(model)
    assert llm.calls[2:] == ["wake:weights", "load_weights", "reset_prefix_cache"]
    state = model.state_dict()
    assert set(llm.loaded[-1]) == set(state)
    assert all(torch.equal(llm.loaded[-1][k], state[k]) for k in state)
    backend.generate(prompts, params)
    assert llm.calls[5:] == ["wake:kv_cache", "generate", "sleep1"]
    assert backend.weight_syncs == 1


def test_trainer_pushes_the_policy_after_every_step(fake_vllm, policy, small_run):
    from aent_cli.engine.setup import RunContext
    from aent_cli.engine.trainer import run_training
    from safetensors.torch import load_file

    result = run_training(validate(compose_config(small_run + ["rollout=vllm", "trainer.steps=2",
                                                               "rollout.max_new_tokens=16"])), RunContext(quiet=True))
    llm = FakeLLM.instances[-1]
    assert llm.calls.count("generate") == 2 and llm.calls.count("load_weights") == 2
    assert llm.calls.index("load_weights") > llm.calls.index("generate")  # after the first step's update
    final = load_file(str(result.final_model_dir / "model.safetensors"))
    for name, tensor in final.items():  # the engine holds the trained weights
        assert torch.equal(llm.loaded[-1][name], tensor), name
    assert any(not torch.equal(llm.loaded[0][n], llm.loaded[1][n]) for n in final)


def test_tensor_parallel_engines_with_several_ranks_are_refused(fake_vllm, policy, monkeypatch):
    model, tokenizer = policy
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    cfg = compose_config(["rollout=vllm", "rollout.tensor_parallel_size=2"]).rollout
    with pytest.raises(UserError, match="tensor_parallel_size=2 with 2 training processes"):
        build_rollout(cfg, model, tokenizer)


def test_missing_vllm_is_one_line_before_the_model_loads(small_run, tmp_path):
    if sys.modules.get("vllm") is not None or __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    result = CliRunner().invoke(app, ["train", "rollout=vllm"] + small_run)
    assert result.exit_code == 2
    assert "rollout.backend=vllm needs vLLM" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


class _Server(BaseHTTPRequestHandler):
    requests: list = []
    token_ids_field = True

    def log_message(self, *args):
        pass

    def _reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._reply({"data": [{"id": "served-model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Server.requests.append(body)
        choices = []
        for i, ids in enumerate(body["prompt"]):
            for j in range(body["n"]):
                out = ids[-2:] + ([EOS] if j == 0 else [])
                choice = {"index": i * body["n"] + j, "text": "", "finish_reason": "stop" if j == 0 else "length"}
                if _Server.token_ids_field:
                    choice["token_ids"] = out
                else:
                    choice["logprobs"] = {"tokens": [f"token_id:{t}" for t in out]}
                choices.append(choice)
        self._reply({"choices": list(reversed(choices))})  # order must come from "index"


def test_server_mode_asks_the_completions_endpoint_for_token_ids(policy):
    model, tokenizer = policy
    server = HTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = compose_config(["rollout=vllm", "rollout.mode=server",
                              f"rollout.server_url=http://127.0.0.1:{server.server_port}/"]).rollout
        backend = build_rollout(cfg, model, tokenizer)
        assert not backend.needs_weight_sync
        params = SamplingParams(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_new_tokens=5)
        for token_ids_field in (True, False):  # newer servers return ids; older ones via logprobs
            _Server.token_ids_field = token_ids_field
            with pytest.warns(UserWarning, match="server's own weights") if token_ids_field else _no_warning():
                groups = backend.generate(["1+2=", "30+4="], params)
            body = _Server.requests[-1]
            assert body["model"] == "served-model" and body["n"] == 2 and body["max_tokens"] == 5
            assert body["prompt"] == [tokenizer.encode(p, add_special_tokens=False) for p in ["1+2=", "30+4="]]
            assert body["top_k"] == -1 and "seed" not in body and body["return_tokens_as_token_ids"]
            for group in groups:
                assert group.completions[0].token_ids == group.prompt_ids[-2:] + [EOS]
                assert group.completions[0].finished and not group.completions[1].finished
                assert group.completions[1].token_ids == group.prompt_ids[-2:]
    finally:
        server.shutdown()


def _no_warning():
    import contextlib

    return contextlib.nullcontext()
