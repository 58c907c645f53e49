"""Nothing silently wrong on resume / load: a hand-edited trainer_state.json or run config.yaml is
refused naming the file (their SHA-256 is recorded at save), a broken `checkpoints/latest` pointer is
refused with the newest intact checkpoint's exact `resume=` (or taken with trainer.resume_fallback=true,
which says so), a truncated model.safetensors is one line naming it (exit 2, before any run is made),
and every resume refusal's first line says what is wrong in at most 200 characters."""
import json
import shutil
from pathlib import Path

import pytest

from aent_cli.cli.app import app

from resume_run import SHAPE, ckpt, runner  # and its fixtures template, run (conftest's pytest_plugins)

FIRST_LINE_MAX = 200


def refused(args, *needles) -> str:
    """The error's first line, after checking exit 2, no traceback, the needles, and its length."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert str(needle) in result.output, (needle, result.output)
    first = next(line for line in result.output.splitlines() if line.startswith("error: "))
    assert len(first) <= FIRST_LINE_MAX, first
    return first


def test_hand_edited_trainer_state_is_refused_naming_it(run):
    run_dir, args = run
    state_file = ckpt(run_dir, 3) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["coef"]["value"] = 0.2  # lambda "tuned" by hand
    state_file.write_text(json.dumps(state, indent=2))
    first = refused(args, f"resume={ckpt(run_dir, 2)}", "trainer.resume_fallback=true")
    assert "step_000003" in first and "trainer_state.json" in first and "edited" in first


def test_hand_edit_with_its_digest_deleted_is_still_refused(run):
    """A checkpoint with a file manifest always has its state digest: deleting the key is an edit."""
    run_dir, args = run
    state_file = ckpt(run_dir, 3) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["coef"]["value"] = 0.17
    del state["state_sha256"]
    state_file.write_text(json.dumps(state))
    first = refused(args, f"resume={ckpt(run_dir, 2)}")
    assert "step_000003" in first and "state_sha256" in first


def test_reformatted_trainer_state_still_resumes_and_steps_can_change(run):
    """The digest covers the content, not the layout; trainer.steps changes by override, as always."""
    run_dir, args = run
    state_file = ckpt(run_dir, 3) / "trainer_state.json"
    state_file.write_text(json.dumps(json.loads(state_file.read_text()), indent=4, sort_keys=True))
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = json.loads((ckpt(run_dir, 4) / "trainer_state.json").read_text())
    assert state["step"] == 4 and len(state["state_sha256"]) == 64
    assert state["run_config"]["sha256"] == json.loads(state_file.read_text())["run_config"]["sha256"]


@pytest.mark.parametrize("edit", [lambda text: text.replace("lr: ", "lr: 0.5 #", 1), lambda text: text + "\n"])
def test_hand_edited_run_config_is_refused_naming_it(run, edit):
    run_dir, args = run
    config = run_dir / "config.yaml"
    config.write_text(edit(config.read_text()))
    first = refused(args, "overrides", "trainer.steps=N")
    assert "R/config.yaml" in first and "edited" in first


@pytest.mark.parametrize("pointer", ["step_000009", "missing", "../../elsewhere", "binary"])
def test_broken_latest_pointer_is_refused_then_taken_with_fallback(run, pointer):
    run_dir, args = run
    latest = run_dir / "checkpoints" / "latest"
    if pointer == "missing":
        latest.unlink()
    elif pointer == "binary":
        latest.write_bytes(b"\xff\xfe\x00garbage")
    else:
        latest.write_text(pointer)
    (ckpt(run_dir, 3) / "optimizer.pt").write_bytes(b"garbage")  # the newest intact one is step 2
    first = refused(args, f"resume={ckpt(run_dir, 2)}", "trainer.resume_fallback=true")
    assert "checkpoints/latest" in first
    result = runner.invoke(app, args + ["trainer.resume_fallback=true"])
    assert result.exit_code == 0, result.output
    assert "checkpoints/latest" in result.output and "step_000002" in result.output
    assert json.loads((ckpt(run_dir, 4) / "trainer_state.json").read_text())["step"] == 4


def test_broken_pointer_and_no_intact_checkpoint(run):
    run_dir, args = run
    (run_dir / "checkpoints" / "latest").write_text("step_000042")
    for step in (1, 2, 3):
        (ckpt(run_dir, step) / "rng.safetensors").write_bytes(b"x")
    refused(args, "step_000042", "no intact checkpoint")


def test_an_explicit_checkpoint_does_not_need_the_pointer(run):
    run_dir, args = run
    (run_dir / "checkpoints" / "latest").unlink()
    result = runner.invoke(app, [a if not a.startswith("resume=") else f"resume={ckpt(run_dir, 3)}" for a in args])
    assert result.exit_code == 0, result.output


def test_override_refusal_says_what_is_wrong_on_its_first_line(run):
    run_dir, args = run
    many = ["trainer.lr=0.5", "trainer.seed=9", "algo.p=0.2", "algo.h_low=0.1", "algo.h_high=0.7",
            "rollout.temperature=0.5", "rollout.top_p=0.9", "model.dtype=float32", "trainer.betas=[0.8,0.9]"]
    first = refused(args + many, "trainer.lr=0.5 (run:", "algo.p=0.2 (run: 0.33)", "allowed on resume")
    assert "cannot apply on resume" in first and "override" in first


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_model_file_in_eval_is_one_line_before_any_run(template, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(template / "runs" / "R" / "final", model)
    _truncate(model / "model.safetensors")
    first = refused(["eval", "--model", str(model), "--bench", "math500", "--limit", "1", "--k", "1",
                     f"tracking.uri=sqlite:///{tmp_path}/eval.db"], model / "model.safetensors", "truncated")
    assert "model.safetensors" in first
    assert not (tmp_path / "eval.db").exists()


def test_nan_weights_behind_an_intact_header_are_one_line(template, tmp_path):
    """Corrupted bytes that still parse: the weights are checked for NaN / inf once loaded."""
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(template / "runs" / "R" / "final", model)
    tensors = load_file(model / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    first = refused(["eval", "--model", str(model), "--bench", "math500", "--limit", "1", "--k", "1",
                     f"tracking.uri=sqlite:///{tmp_path}/eval.db"], "NaN or inf")
    assert "weight " in first


def test_truncated_checkpoint_model_in_eval_of_a_run_folder(run, tmp_path):
    run_dir, _ = run
    _truncate(ckpt(run_dir, 2) / "model.safetensors")
    refused(["eval", "--model", str(run_dir), "--checkpoint", "all", "--bench", "math500", "--limit", "1",
             "--k", "1", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"], ckpt(run_dir, 2) / "model.safetensors")


def test_truncated_model_path_in_train_is_one_line_before_any_run(template, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(template / "runs" / "R" / "final", model)
    (model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")  # header promises more
    refused(["train", f"model.path={model}", "trainer.steps=1", f"trainer.output_dir={tmp_path}/runs",
             f"tracking.uri=sqlite:///{tmp_path}/train.db", *SHAPE], "model.path", model / "model.safetensors")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "train.db").exists()
