"""The paper's two settings (experiments/setting_a.yaml, setting_b.yaml) composed with each method, checked
against the paper's settings table as transcribed in the method notes (shared/method.md)."""
import pytest

from aent_cli.algos.coef import build_coef
from aent_cli.config import compose_config, validate
from aent_cli.data.sources import load_problems, looks_like_hub_id
from aent_cli.eval.benchmarks import BENCHMARKS

# "Paper settings (verl, AdamW)", one column per setting. EntReg's fixed lambda is not stated for (b).
PAPER = {
    "setting_a": dict(model="Qwen/Qwen2.5-Math-1.5B", lr=2e-6, max_response=3072, batch=512, n=16, p=0.33,
                      h_low=0.13, h_high=0.24, init=0.002, beta=0.002, start_epoch=3, lam_min=0.0006,
                      lam_max=0.009, entreg=0.002),
    "setting_b": dict(model="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", lr=1e-6, max_response=7168, batch=256,
                      n=8, p=0.25, h_low=0.35, h_high=0.62, init=3e-4, beta=1e-4, start_epoch=2, lam_min=4e-5,
                      lam_max=0.001, entreg=None),
}
# What each method must keep whatever the experiment overlays on the algo section.
METHODS = {"grpo": ("none", "constant"), "entreg": ("full", "constant"), "aent": ("clamped", "adaptive")}


@pytest.fixture
def data_dir(shared_data, monkeypatch):
    monkeypatch.setenv("AENT_DATA_DIR", str(shared_data))
    return shared_data


@pytest.mark.parametrize("experiment_first", [True, False])
@pytest.mark.parametrize("algo", sorted(METHODS))
@pytest.mark.parametrize("setting", sorted(PAPER))
def test_preset_matches_the_paper(setting, algo, experiment_first, data_dir):
    overrides = [f"+experiment={setting}", f"algo={algo}"]
    cfg = validate(compose_config(overrides if experiment_first else overrides[::-1]))
    paper = PAPER[setting]

    assert cfg.model.path == paper["model"] and cfg.model.dtype == "bfloat16"
    r = cfg.rollout
    assert (r.n, r.temperature, r.top_p, r.top_k, r.max_new_tokens) == (paper["n"], 1.0, 1.0, -1, paper["max_response"])
    t = cfg.trainer
    assert t.lr == paper["lr"] and t.batch_size == paper["batch"] and t.batch_size % t.mini_batch_size == 0

    a, c = cfg.algo, cfg.algo.coef
    assert (a.p, a.h_low, a.h_high) == (paper["p"], paper["h_low"], paper["h_high"])
    assert (c.init, c.lr, c.start_epoch, c.min, c.max) == (paper["init"], paper["beta"], paper["start_epoch"],
                                                           paper["lam_min"], paper["lam_max"])
    bonus, mode = METHODS[algo]
    assert (a.name, a.bonus, c.mode, a.policy_loss, a.advantage) == (algo, bonus, mode, "ppo_clip", "grpo")
    if algo == "entreg":  # its fixed lambda: the paper's where stated, else AEnt's initial value
        assert c.init == (paper["entreg"] if paper["entreg"] is not None else paper["init"])

    e = cfg.eval
    assert (e.k, e.temperature, e.top_p, e.top_k) == (4, 0.6, 0.95, 20)
    assert sorted(e.benchmarks) == sorted(BENCHMARKS) and len(e.benchmarks) == 6


def test_setting_a_trains_on_the_math_train_split(data_dir):
    cfg = validate(compose_config(["+experiment=setting_a", "algo=aent"]))
    assert cfg.data.train == f"{data_dir}/train/math_train.jsonl"
    assert cfg.data.val == f"{data_dir}/benchmarks/math500.jsonl" and cfg.data.val_size == 500
    problems = load_problems(cfg.data.train)
    assert len(problems) == 7498  # MATH train's 7,500 less the two with an empty answer
    # "updates from epoch 3": 7498 // 512 = 14 steps per epoch, so lambda first moves after step 29.
    coef = build_coef(cfg.algo, len(problems) // cfg.trainer.batch_size)
    assert coef.start_step == 29
    assert coef.update(0.0, 28) == 0.002 and coef.update(0.0, 29) == pytest.approx(0.002 + 0.002 * 0.13)


def test_setting_b_reads_a_40k_openr1_subset_from_the_hub(data_dir):
    cfg = validate(compose_config(["+experiment=setting_b", "algo=aent"]))
    assert looks_like_hub_id(cfg.data.train) and cfg.data.train == "open-r1/OpenR1-Math-220k"
    assert cfg.data.train_split == "train[:40000]"
    assert (cfg.data.problem_field, cfg.data.answer_field) == ("problem", "answer")
    # 40,000 // 256 = 156 steps per epoch: "updates from epoch 2" is step 157.
    assert build_coef(cfg.algo, 40000 // cfg.trainer.batch_size).start_step == 157
