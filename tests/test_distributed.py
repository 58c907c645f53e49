"""Data-parallel training: environment detection, sharding by whole groups, and 2-process runs
(torchrun on gloo, CPU) checked against one process on the same data: the same loss, gradient norm,
weights after two optimiser steps and entropy coefficient, with the torch backend and DeepSpeed
ZeRO stages 0-3; then an end-to-end `run_training` under ZeRO-3 with checkpoint and resume.

The multi-process parts run this file as a script under torchrun (see `_worker`).
"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aent_cli.engine.collectives import all_reduce_sum, global_denominator, shard, shard_uneven
from aent_cli.engine.distributed import DistEnv, check_divisible, detect_env
from aent_cli.errors import UserError

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
GROUP, QUERIES = 4, 4


# --- single-process units ------------------------------------------------------------------------

def test_detect_env_reads_the_launcher_variables():
    env = detect_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.is_main) == (3, 4, 1, False)
    assert detect_env({}) == DistEnv()  # plain `aent train`: one process
    with pytest.raises(UserError, match="RANK=4 WORLD_SIZE=4"):
        detect_env({"RANK": "4", "WORLD_SIZE": "4", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    with pytest.raises(UserError, match="MASTER_ADDR"):
        detect_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(UserError, match="WORLD_SIZE='two'"):
        detect_env({"WORLD_SIZE": "two"})


def test_queries_shard_into_equal_blocks_of_whole_groups():
    batch = list(range(8))
    parts = [shard(batch, DistEnv(rank=r, world_size=4)) for r in range(4)]
    assert parts == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert sorted(sum((shard_uneven(list(range(7)), DistEnv(rank=r, world_size=3)) for r in range(3)), [])) == \
        list(range(7))
    with pytest.raises(ValueError):
        shard(list(range(6)), DistEnv(rank=0, world_size=4))
    check_divisible(DistEnv(rank=0, world_size=2), 8, 4)
    with pytest.raises(UserError, match="trainer.mini_batch_size=3 is not divisible by the world size 2"):
        check_divisible(DistEnv(rank=0, world_size=2), 6, 3)


def test_one_process_collectives_are_the_identity():
    env = DistEnv()
    assert all_reduce_sum([1.5, torch.tensor(2.0)], env) == [1.5, 2.0]
    assert global_denominator(17.0, env) == 17.0


def test_both_backends_implement_the_training_backend_contract():
    """engine/backend.py's Protocol: every member on the torch backend (an instance) and on the
    DeepSpeed class (building one needs a process group), with the same parameters."""
    import inspect

    from aent_cli.engine.backend import TrainingBackend
    from aent_cli.engine.deepspeed_backend import DeepSpeedBackend
    from aent_cli.engine.torch_backend import TorchBackend

    model = torch.nn.Linear(2, 2)
    assert isinstance(TorchBackend(model, torch.optim.SGD(model.parameters(), lr=0.1)), TrainingBackend)
    methods = [name for name, value in vars(TrainingBackend).items() if inspect.isfunction(value)
               and not name.startswith("_")]
    assert {"prepare_forward", "step", "save_checkpoint", "restore_checkpoint", "generation_context"} <= set(methods)
    for cls in (TorchBackend, DeepSpeedBackend):
        for name in methods:
            want = list(inspect.signature(getattr(TrainingBackend, name)).parameters)
            assert list(inspect.signature(getattr(cls, name)).parameters) == want, (cls.__name__, name)


def test_a_mini_batch_counts_groups_over_all_ranks():
    """trainer.mini_batch_size is global: with 2 ranks each optimiser step takes half of it from each
    rank, so batch 8 / mini 4 makes 2 steps per training step as in one process (it made 1 step of
    8 groups before). That a rank's share of a mini-batch then updates as one process on the union is
    test_two_ranks_update_as_one_process_on_the_same_data."""
    from aent_cli.config import compose_config
    from aent_cli.engine.update import UpdateSettings

    cfg = compose_config(["trainer.batch_size=8", "trainer.mini_batch_size=4"])
    assert UpdateSettings.from_config(cfg).mini_batch_groups == 4
    assert UpdateSettings.from_config(cfg, world_size=2).mini_batch_groups == 2


def test_world_size_mismatch_on_resume_is_a_user_error(tmp_path, monkeypatch):
    from aent_cli.config import compose_config, validate
    from aent_cli.engine.setup import TrainingSetup

    ckpt = tmp_path / "run" / "checkpoints" / "step_000001"
    ckpt.mkdir(parents=True)
    (ckpt.parent / "latest").write_text(ckpt.name)
    (ckpt / "trainer_state.json").write_text(json.dumps({"mlflow_run_id": "x", "world_size": 2, "step": 1}))
    (tmp_path / "run" / "config.yaml").write_text("trainer:\n  steps: 2\n")
    cfg = validate(compose_config([f"trainer.resume={tmp_path / 'run'}", f"trainer.output_dir={tmp_path}"]))
    with pytest.raises(UserError, match="written by 2 process"):
        TrainingSetup.build(cfg)


# --- two processes -------------------------------------------------------------------------------

def _torchrun(args, out_dir: Path, timeout: int = 300) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HERE),
           str(out_dir), *args]
    # own session: a hung run is killed with all its workers, not just the launcher
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(out_dir), start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun {args[0]} timed out after {timeout} s:\n{stderr[-6000:]}")
    assert proc.returncode == 0, (stdout[-4000:] + stderr[-6000:])
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_ranks_update_as_one_process_on_the_same_data(tmp_path, tiny_cache):
    """Each rank optimises its 2 of 4 groups; the ranks agree with each other and with one process
    that optimises all 4 (two steps: on-policy single pass, then with measured old log-probs;
    micro-batches of 3 sequences, LM-head chunks of 5 tokens so ranks need different chunk counts)."""
    pytest.importorskip("deepspeed")
    ranks = _torchrun(["update", "torch", "ds0", "ds1", "ds2", "ds3"], tmp_path)
    for name in ("torch", "ds0", "ds1", "ds2", "ds3"):
        got, ref = ranks[0][name], ranks[0]["reference"]
        assert ranks[1][name] == pytest.approx(got, rel=1e-6, abs=1e-7), name  # ranks agree
        for key in ("pg_loss_1", "entropy_bonus_1", "grad_norm_1", "pg_loss_2", "clamped_entropy", "lambda"):
            assert got[key] == pytest.approx(ref[key], rel=2e-5, abs=1e-6), (name, key)
        # step 2 starts from weights that already differ in the last fp32 bits (ZeRO's reduction
        # order), and the norm of a random-token gradient (~9 here) magnifies that
        assert got["grad_norm_2"] == pytest.approx(ref["grad_norm_2"], rel=1e-4), name
        assert got["max_param_diff"] < 2e-6, name
        assert got["moved"] > 1e-4  # the steps changed the weights at all
    # lambda moved by lr * (h_low - H~) with H~ the token-weighted mean over both ranks
    ref = ranks[0]["reference"]
    assert ref["lambda"] == pytest.approx(0.01 + 0.5 * (5.0 - ref["clamped_entropy"]), rel=1e-6)


def test_zero3_run_checkpoints_and_resumes_across_two_ranks(tmp_path, tiny_cache, mlflow_db):
    pytest.importorskip("deepspeed")
    common = [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"trainer.output_dir={tmp_path}/runs",
              "trainer.run_name=ds", "trainer.steps=3", "trainer.batch_size=4", "trainer.mini_batch_size=4",
              "trainer.micro_batch_size=6", "rollout.n=4", "trainer.val_every=3", "data.val_size=6",
              "trainer.backend=deepspeed", "trainer.zero_stage=3", "model.logit_chunk=7",
              "algo.coef.init=0.002", "algo.coef.min=0", "algo.coef.max=1.0", "algo.coef.lr=0.01",
              "algo.coef.start_step=0", "algo.h_low=5", "algo.h_high=6"]
    ranks = _torchrun(["train", f"{tmp_path}/runs/ds", *common], tmp_path)  # stop after step 2, resume
    histories = [r["first"]["history"] + r["resumed"]["history"] for r in ranks]
    for a, b in zip(*histories):
        for key, value in a.items():  # metrics are global: both ranks hold the same numbers
            if not key.startswith(("perf/", "timing/")):
                assert b[key] == pytest.approx(value, rel=1e-6), key
    assert [h["step"] for h in histories[0]] == [1, 2, 3]
    lams = [h["actor/entropy_coef"] for h in histories[0]]  # H~ < h_low: lambda rises every step
    assert lams[0] == pytest.approx(0.002) and lams[1] > lams[0] and lams[2] > lams[1]
    for prev, h in zip(histories[0], histories[0][1:]):
        assert h["actor/entropy_coef"] == pytest.approx(prev["actor/entropy_coef"]
                                                         + 0.01 * (5 - prev["actor/clamped_entropy"]))
    assert len({r[part]["run_id"] for r in ranks for part in ("first", "resumed")}) == 1

    run_dir = tmp_path / "runs" / "ds"
    assert sorted(p.name for p in (run_dir / "checkpoints" / "zero").glob("step_*")) == ["step_000002", "step_000003"]
    state = json.loads((run_dir / "checkpoints" / "step_000003" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["zero_tag"] == "step_000003"
    assert (run_dir / "checkpoints" / "step_000003" / "rng_rank1.safetensors").is_file()
    from safetensors.torch import load_file  # the HF-format copy holds full (gathered) weights

    weights = load_file(str(run_dir / "final" / "model.safetensors"))
    assert all(t.numel() > 0 for t in weights.values())

    from aent_cli.tracking import store  # rank 0 alone recorded: one run, each step once
    client = store.client(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([store.experiment_id(client, "aent")])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "reward/mean")) == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val/acc")] == [0, 3]


# --- the torchrun worker -------------------------------------------------------------------------

def _fixed_data(tokenizer, seed: int = 0):
    """4 arithmetic prompts x 4 responses of random tokens and lengths (1-12, then EOS), 0/1 rewards."""
    from aent_cli.data.arithmetic import arithmetic_problems

    g = torch.Generator().manual_seed(seed)
    prompts = [tokenizer.encode(p.problem, add_special_tokens=False) for p in arithmetic_problems(QUERIES, 0, "train")]
    responses = []
    for _ in range(QUERIES * GROUP):
        length = int(torch.randint(1, 13, (1,), generator=g))
        responses.append(torch.randint(3, len(tokenizer), (length,), generator=g).tolist() + [tokenizer.eos_token_id])
    rewards = torch.randint(0, 2, (QUERIES * GROUP,), generator=g).float()
    return prompts, responses, rewards


def _batch(prompts, responses, rewards, queries, tokenizer, algo):
    from aent_cli.algos.advantages import consecutive_groups, grpo_advantages
    from aent_cli.models.logprobs import pack_sequences

    rows = [q * GROUP + j for q in queries for j in range(GROUP)]
    batch = pack_sequences([prompts[r // GROUP] for r in rows], [responses[r] for r in rows], tokenizer.pad_token_id)
    return batch, grpo_advantages(rewards[rows], consecutive_groups(len(rows), GROUP), algo.adv_eps)


def _two_steps(model, backend, batch, advantages, algo, env):
    """Step 1 on-policy (one forward), step 2 with old log-probs measured first; then lambda."""
    from aent_cli.algos.coef import build_coef
    from aent_cli.engine.update import StepBatch, UpdateSettings, measure, optimise

    settings = UpdateSettings(temperature=1.0, logit_chunk=5, mini_batch_groups=batch.input_ids.shape[0] // GROUP,
                              micro_batch_size=3, ppo_epochs=1, grad_clip=1.0, max_response_length=16)
    update = optimise(model, backend, algo, StepBatch(batch, advantages), 0.01, settings)
    one, measured = update.stats, update.measured
    old = measure(model, batch, settings, algo.p, backend=backend)
    two = optimise(model, backend, algo, StepBatch(batch, advantages, old), 0.01, settings).stats
    mask = batch.response_mask
    total, tokens = all_reduce_sum([(measured["clamped_entropy"] * mask).sum(), mask.sum()], env)
    coef = build_coef(algo, 1)
    coef.update(total / tokens, 1)
    return {"pg_loss_1": one["pg_loss"], "entropy_bonus_1": one["entropy_bonus"], "grad_norm_1": one["grad_norm"],
            "pg_loss_2": two["pg_loss"], "grad_norm_2": two["grad_norm"], "clamped_entropy": total / tokens,
            "lambda": coef.value}


def _update_worker(out: Path, names, env) -> dict:
    from aent_cli.config import compose_config
    from aent_cli.engine.distributed import LOCAL, init_distributed
    from aent_cli.engine.torch_backend import TorchBackend
    from aent_cli.models.loading import load_policy

    cfg = compose_config(["algo=aent", "algo.coef.init=0.01", "algo.coef.lr=0.5", "algo.coef.max=10",
                          "algo.h_low=5", "algo.h_high=6", "algo.coef.start_step=0"])
    env = init_distributed(env, torch.device("cpu"))
    base, tokenizer = load_policy(cfg.model, "cpu")
    prompts, responses, rewards = _fixed_data(tokenizer)
    results = {}

    ref_model = copy.deepcopy(base)
    full, full_adv = _batch(prompts, responses, rewards, range(QUERIES), tokenizer, cfg.algo)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-3, eps=1e-4)
    results["reference"] = _two_steps(ref_model, TorchBackend(ref_model, ref_opt, LOCAL), full, full_adv, cfg.algo,
                                      LOCAL)
    reference = {k: v.detach().clone() for k, v in ref_model.state_dict().items()}

    local, local_adv = _batch(prompts, responses, rewards, shard(list(range(QUERIES)), env), tokenizer, cfg.algo)
    for name in names:
        model = copy.deepcopy(base)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-4)
        if name == "torch":
            backend = TorchBackend(model, optimizer, env)
        else:
            from aent_cli.engine.deepspeed_backend import DeepSpeedBackend

            trainer = compose_config(["trainer.grad_clip=1.0", f"trainer.zero_stage={name[2:]}",
                                      "trainer.micro_batch_size=3"]).trainer
            backend = DeepSpeedBackend(model, optimizer, trainer, env, torch.device("cpu"))
        stats = _two_steps(model, backend, local, local_adv, cfg.algo, env)
        with backend._gathered() if name == "ds3" else contextlib_null():
            state = model.state_dict()
            stats["max_param_diff"] = max(float((state[k].float() - reference[k]).abs().max()) for k in reference)
            stats["moved"] = max(float((state[k].float() - base.state_dict()[k]).abs().max()) for k in reference)
        backend.close()
        results[name] = stats
    return results


def contextlib_null():
    import contextlib

    return contextlib.nullcontext()


def _train_worker(out: Path, args, env) -> dict:
    """Train with trainer.stop_after=2, then resume the same run dir to the end, in one launch."""
    from aent_cli.config import compose_config, validate
    from aent_cli.engine.setup import RunContext
    from aent_cli.engine.trainer import run_training

    run_dir, overrides = args[0], list(args[1:])
    out = {}
    for part, extra in (("first", ["trainer.stop_after=2"]), ("resumed", [f"trainer.resume={run_dir}"])):
        result = run_training(validate(compose_config(overrides + extra)), RunContext(quiet=True))
        out[part] = {"history": result.history, "run_id": result.run_id}
    return out


def _worker(argv) -> None:
    torch.set_num_threads(1)
    out, mode, rest = Path(argv[0]), argv[1], argv[2:]
    env = detect_env()
    result = (_update_worker if mode == "update" else _train_worker)(out, rest, env)
    (out / f"rank{env.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _worker(sys.argv[1:])
