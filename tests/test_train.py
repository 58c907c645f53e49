"""The training loop on the embedded tiny model: rollout masks, log-prob alignment, advantage
broadcast, the per-step lambda rule, MLflow records, a rising reward, exact resume, bad input."""
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from aent_cli.algos.objective import compute_loss
from aent_cli.cli.app import app
from aent_cli.config import compose_config, validate
from aent_cli.engine.trainer import run_training
from aent_cli.engine.setup import RunContext
from aent_cli.models.loading import load_policy
from aent_cli.models.logprobs import pack_sequences, response_token_stats
from aent_cli.rollout import SamplingParams, build_rollout
from aent_cli.tracking import store

runner = CliRunner()
PERF_PREFIXES = ("perf/", "timing/")


@pytest.fixture(scope="module")
def policy(tiny_cache):
    cfg = compose_config([])
    model, tokenizer = load_policy(cfg.model, "cpu")
    return cfg, model, tokenizer


def _train(overrides):
    return run_training(validate(compose_config(overrides)), RunContext(quiet=True))


def test_rollout_masks_and_logprob_alignment(policy):
    """Generated ids end at EOS, decode to the text, and the trainer's log-probs of those ids equal
    the log-softmax that generate itself sampled from (temperature 1, no top-p/top-k)."""
    cfg, model, tokenizer = policy
    backend = build_rollout(cfg.rollout, model, tokenizer)
    prompts = ["12+34=", "56+7*8="]
    torch.manual_seed(0)
    groups = backend.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=12))
    assert [len(g.completions) for g in groups] == [3, 3]
    for g, prompt in zip(groups, prompts):
        assert tokenizer.decode(g.prompt_ids) == prompt
        for c in g.completions:
            assert c.finished == (c.token_ids[-1] == tokenizer.eos_token_id)
            assert tokenizer.decode(c.token_ids, skip_special_tokens=True) == c.text
            assert tokenizer.eos_token_id not in c.token_ids[:-1]

    completions = [c for g in groups for c in g.completions]
    batch = pack_sequences([g.prompt_ids for g in groups for _ in g.completions],
                           [c.token_ids for c in completions], tokenizer.pad_token_id)
    assert batch.response_mask.sum(-1).tolist() == [len(c.token_ids) for c in completions]
    with torch.no_grad():
        stats = response_token_stats(model, batch, chunk=5)
        for b, c in enumerate(completions):  # independent: one unpadded forward per sequence
            ids = torch.tensor([batch.input_ids[b, :int(batch.attention_mask[b].sum())].tolist()])
            logits = model(input_ids=ids).logits[0].float()
            start = int(batch.response_start[b])
            for j, tok in enumerate(c.token_ids):
                expected = torch.log_softmax(logits[start + j - 1], -1)[tok]
                assert stats["logp"][b, j].item() == pytest.approx(expected.item(), abs=1e-4)
        assert (stats["logp"][batch.response_mask == 0] == 0).all()


def test_warm_start_answers_both_ways_and_the_less_likely_way_is_right_more_often(policy):
    """The embedded default leaves RL a choice to make: the warm-started policy samples a direct
    answer ("\\boxed{72}", from a solver that forgets the carry) more often than a worked one
    ("7+5=12, 4+3+1=8, \\boxed{82}"), and the worked one is right more often."""
    from aent_cli.data.arithmetic import direct_response, test_problems, worked_response
    from aent_cli.rewards import math_reward

    assert math_reward(direct_response("ka 47+35="), "82") == 0.0 and math_reward(worked_response("ka 47+35="), "82") == 1.0
    cfg, model, tokenizer = policy
    problems = test_problems()[:32]
    torch.manual_seed(0)
    generated = build_rollout(cfg.rollout, model, tokenizer).generate(
        [p.problem for p in problems], SamplingParams(n=4, temperature=1.0, max_new_tokens=32))
    paths = {"direct": [], "worked": []}
    for g, p in zip(generated, problems):
        for c in g.completions:
            kind = "direct" if c.text.startswith("\\boxed{") else "worked" if c.text[:1].isdigit() else None
            if kind:
                paths[kind].append(math_reward(c.text, p.answer))
    n = len(problems) * 4
    assert len(paths["direct"]) > len(paths["worked"]) > 0.1 * n, {k: len(v) for k, v in paths.items()}
    assert len(paths["direct"]) + len(paths["worked"]) > 0.8 * n
    accuracy = {k: sum(v) / len(v) for k, v in paths.items()}
    assert accuracy["worked"] > accuracy["direct"] + 0.2, accuracy


def test_advantages_broadcast_to_every_token():
    algo = compose_config(["algo=grpo"]).algo
    logp = torch.randn(3, 5)
    old = logp + 0.05 * torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)
    adv = torch.tensor([0.5, -1.0, 2.0])
    per_seq, _ = compute_loss(algo, logp, old, adv, mask, 0.0)
    per_tok, _ = compute_loss(algo, logp, old, adv[:, None].expand(3, 5), mask, 0.0)
    assert per_seq.item() == pytest.approx(per_tok.item())


def test_run_logs_metrics_and_follows_the_lambda_rule(small_run):
    overrides = small_run + ["trainer.steps=4", "trainer.val_every=2", "algo.coef.start_step=2",
                             "algo.coef.init=0.01", "algo.coef.lr=0.5", "algo.h_low=5", "algo.h_high=6",
                             "algo.coef.max=0.05"]
    result = _train(overrides)
    client = store.client(overrides[0].split("=", 1)[1])
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["algo.name"] == "aent" and run.data.tags["aent.kind"] == "train"
    for key in ("reward/mean", "acc/train", "response_length/mean", "actor/entropy", "actor/clamped_entropy",
                "actor/entropy_coef", "actor/pg_clipfrac", "actor/ppo_kl", "actor/grad_norm", "perf/step_time_s",
                "perf/tokens_per_s", "val/acc"):
        assert key in run.data.metrics, key
    assert [m.step for m in client.get_metric_history(result.run_id, "val/acc")] == [0, 2, 4]

    # eq. 4.1 recomputed from the logged clamped entropies: frozen before start_step, then
    # lambda rises by lr * (h_low - H) below the band (H~ < 5 always), clipped at coef.max
    lam = 0.01
    hist = {h["step"]: h for h in result.history}
    for step in range(1, 5):
        assert hist[step]["actor/entropy_coef"] == pytest.approx(lam)
        h = hist[step]["actor/clamped_entropy"]
        if step >= 2:
            lam = min(max(lam - 0.5 * min(h - 5, 0) + 0.5 * min(6 - h, 0), 0.001), 0.05)
    assert lam == pytest.approx(0.05)  # pushed to the top of [min, max]
    assert result.final_model_dir.joinpath("model.safetensors").is_file()


def test_reward_rises_on_a_short_seeded_run(small_run, tmp_path):
    """GRPO on a fixed batch of sums that carry: reward climbs (the policy moves to the worked answers)."""
    from aent_cli.data.arithmetic import arithmetic_problems

    data = tmp_path / "sums.jsonl"
    sums = arithmetic_problems(8, 0, "train", hard_share=1.0)
    data.write_text("".join(json.dumps({"problem": p.problem, "answer": p.answer}) + "\n" for p in sums))
    overrides = small_run + [f"data.train={data}", "data.shuffle=false", "trainer.steps=14", "trainer.batch_size=8",
                             "trainer.mini_batch_size=8", "rollout.n=8", "algo=grpo", "trainer.lr=3e-4"]
    result = _train(overrides)
    rewards = [h["reward/mean"] for h in result.history]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.05, rewards


def test_resume_reproduces_an_uninterrupted_run_exactly(small_run, tmp_path):
    base = small_run + ["trainer.steps=4", "trainer.val_every=2", "trainer.checkpoint_every=2",
                        "algo.coef.start_step=1", "algo.coef.lr=0.1"]
    full = _train(base + ["trainer.run_name=full"])
    cut = _train(base + ["trainer.run_name=cut", "trainer.stop_after=2"])
    assert [h["step"] for h in cut.history] == [1, 2]
    resumed = _train(base + [f"trainer.resume={cut.run_dir}"])
    assert resumed.run_id == cut.run_id
    assert [h["step"] for h in resumed.history] == [3, 4]
    for want, got in zip(full.history[2:], resumed.history):
        for key, value in want.items():
            if not key.startswith(PERF_PREFIXES):
                assert got[key] == value, key
    state = json.loads((cut.run_dir / "checkpoints" / "step_000004" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["mlflow_run_id"] == cut.run_id
    client = store.client(small_run[0].split("=", 1)[1])
    history = client.get_metric_history(cut.run_id, "reward/mean")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert client.get_run(cut.run_id).info.status == "FINISHED"


def test_bad_data_line_stops_before_training(tmp_path, small_run):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1=", "answer": "2"}\n{"problem": "2+2="}\n')
    result = runner.invoke(app, ["train", f"data.train={bad}"] + small_run)
    assert result.exit_code == 2
    assert f"{bad}:2:" in result.output and "answer" in result.output
    assert not (tmp_path / "runs").exists()


def test_cli_run_outside_a_terminal_prints_plain_progress_lines(small_run):
    """In a log file (not a terminal) progress is one plain line per step here (3 steps) plus the
    summary table, instead of a bar only a terminal can redraw."""
    result = runner.invoke(app, ["train"] + small_run + ["trainer.val_every=3"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("train ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "reward" in lines[0] and "lambda" in lines[0] and "val" in lines[-1]
    assert "val/acc" in result.output and "\r" not in result.output


def test_bad_config_value_exits_2(small_run):
    result = runner.invoke(app, ["train", "algo.h_low=0.5", "algo.h_high=0.1"] + small_run)
    assert result.exit_code == 2 and "algo.h_low" in result.output


def test_resume_of_missing_dir_is_a_user_error(tmp_path, small_run):
    result = runner.invoke(app, ["train", f"resume={tmp_path}/nope"] + small_run)
    assert result.exit_code == 2 and "no such run directory" in result.output


@pytest.mark.parametrize("algo,stat", [("clip_cov", "actor/cov_clip_frac"), ("kl_cov", "actor/kl_cov_frac"),
                                       ("target_entropy", "actor/entropy_coef"),
                                       ("high_entropy_mask", "actor/entropy_mask_frac")])
def test_each_entropy_control_trains_on_the_embedded_default(small_run, algo, stat):
    result = _train(small_run + [f"algo={algo}", "trainer.steps=2"])
    assert [h["step"] for h in result.history] == [1, 2]
    for h in result.history:
        assert stat in h and math.isfinite(h[stat]) and math.isfinite(h["actor/pg_loss"])
    if algo == "high_entropy_mask":  # the top rho = 0.2 of tokens by entropy keep their gradient
        assert all(0.0 < h[stat] <= 0.5 for h in result.history)
    if algo == "target_entropy":  # lambda moved by exactly delta after step 1
        delta = compose_config(["algo=target_entropy"]).algo.coef.delta
        assert abs(result.history[1][stat] - result.history[0][stat]) == pytest.approx(delta)
