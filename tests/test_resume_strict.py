"""Strict resume (issue 15, points 1-3 and 9): a checkpoint with missing, renamed, truncated or
replaced files is refused with one line naming the file and the exact `resume=` of the older intact
checkpoint (or taken with trainer.resume_fallback=true); pickled payloads are never unpickled;
overrides that change the run are refused, allowed ones honoured; the run's own store is used."""
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from aent_cli.cli.app import app
from aent_cli.engine.checkpoint import state_digest
from aent_cli.tracking import store

from resume_run import SHAPE, ckpt, runner  # and its fixtures template, run (conftest's pytest_plugins)


def status(tmp_path: Path, run_dir: Path) -> str:
    state = json.loads(sorted(run_dir.glob("checkpoints/step_*/trainer_state.json"))[0].read_text())
    return store.client(f"sqlite:///{tmp_path}/mlflow.db").get_run(state["mlflow_run_id"]).info.status


def refused(args, *needles):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert str(needle) in result.output, (needle, result.output)
    return result.output


def test_intact_checkpoint_resumes_and_the_manifest_covers_every_file(run):
    run_dir, args = run
    state = json.loads((ckpt(run_dir, 3) / "trainer_state.json").read_text())
    assert {"model.safetensors", "optimizer.pt", "rng.safetensors", "config.json"} <= set(state["files"])
    assert state["tracking_uri"].startswith("sqlite:////")  # absolute: any working directory finds it
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("damage", ["delete_model", "rename_weights", "truncate_model", "truncate_optimizer",
                                    "replace_rng", "truncate_state", "replace_optimizer"])
def test_damaged_latest_is_refused_naming_the_file_and_the_older_checkpoint(run, tmp_path, damage):
    run_dir, args = run
    latest = ckpt(run_dir, 3)
    name = {"delete_model": "model.safetensors", "rename_weights": "model.safetensors",
            "truncate_model": "model.safetensors", "truncate_optimizer": "optimizer.pt",
            "replace_rng": "rng.safetensors", "truncate_state": "trainer_state.json",
            "replace_optimizer": "optimizer.pt"}[damage]
    path = latest / name
    if damage == "delete_model":
        path.unlink()
    elif damage == "rename_weights":
        tensors = load_file(str(path))
        save_file({f"renamed.{k}": v for k, v in tensors.items()}, str(path))
    elif damage.startswith("truncate"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "replace_rng":
        shutil.copy(ckpt(run_dir, 1) / name, path)  # a valid file, from another step
    else:
        shutil.copy(ckpt(run_dir, 2) / name, path)
    before = status(tmp_path, run_dir)
    older = ckpt(run_dir, 2)
    refused(args, name, "damaged", f"resume={older}", "trainer.resume_fallback=true")
    assert status(tmp_path, run_dir) == before  # nothing recorded: the run is not marked FAILED

    # the suggested resume= works, and so does the explicit fallback (which says what it took)
    result = runner.invoke(app, [a if not a.startswith("resume=") else f"resume={older}" for a in args])
    assert result.exit_code == 0, result.output


def test_fallback_takes_the_newest_intact_checkpoint_and_says_so(run):
    run_dir, args = run
    (ckpt(run_dir, 3) / "model.safetensors").unlink()
    result = runner.invoke(app, args + ["trainer.resume_fallback=true"])
    assert result.exit_code == 0, result.output
    assert "step_000002" in result.output and "resume_fallback" in result.output
    assert json.loads((ckpt(run_dir, 4) / "trainer_state.json").read_text())["step"] == 4


def test_no_intact_checkpoint_left(run):
    run_dir, args = run
    for step in (1, 2, 3):
        (ckpt(run_dir, step) / "optimizer.pt").write_bytes(b"garbage")
    refused(args, "optimizer.pt", "no older intact checkpoint")


def test_checkpoint_without_manifest_still_loads_strictly(run):
    """Checkpoints written before manifests: renamed weights are refused by name, from the headers."""
    run_dir, args = run
    latest = ckpt(run_dir, 3)
    state = json.loads((latest / "trainer_state.json").read_text())
    del state["files"], state["state_sha256"]  # neither was written before manifests
    (latest / "trainer_state.json").write_text(json.dumps(state))
    tensors = load_file(str(latest / "model.safetensors"))
    first = sorted(tensors)[0]
    tensors[f"renamed.{first}"] = tensors.pop(first)
    save_file(tensors, str(latest / "model.safetensors"))
    refused(args, "model.safetensors", "does not hold this model's weights", "1 missing", "1 unexpected", first)


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "__payload_ran__",))


def test_pickle_payload_in_optimizer_file_is_refused_not_run(run, tmp_path):
    """torch backend: optimizer.pt is read with weights_only=True; a pickle that would run code is
    refused (with a manifest it is already a replaced file; without one, the loader refuses it)."""
    run_dir, args = run
    marker = Path(__file__).parent / "__payload_ran__"
    marker.unlink(missing_ok=True)
    latest = ckpt(run_dir, 3)
    with open(latest / "optimizer.pt", "wb") as f:
        pickle.dump({"state": {}, "param_groups": [], "x": Payload()}, f)
    refused(args, "optimizer.pt", "damaged")
    state = json.loads((latest / "trainer_state.json").read_text())
    del state["files"], state["state_sha256"]  # neither was written before manifests
    (latest / "trainer_state.json").write_text(json.dumps(state))
    torch.save({"state": {}, "param_groups": [], "x": Payload()}, latest / "optimizer.pt")
    refused(args, "optimizer.pt", "cannot be loaded safely")
    assert not marker.exists()


@pytest.mark.parametrize("override,key", [("algo=grpo", "algo.name"), ("algo=aent", None),
                                          ("model.path=/elsewhere", "model.path"),
                                          ("trainer.seed=1", "trainer.seed"), ("rollout.n=8", "rollout.n"),
                                          ("data.train=/x.jsonl", "data.train"), ("trainer.lr=0.5", "trainer.lr")])
def test_overrides_that_change_the_run_are_refused(run, override, key):
    run_dir, args = run
    if key is None:  # naming the saved value (the default here) is not a change
        assert runner.invoke(app, args + [override]).exit_code == 0
        return
    out = refused(args + [override], key, "cannot apply on resume")
    assert "Traceback" not in out


def test_group_override_equal_to_the_default_is_still_refused_on_a_grpo_run(template, tmp_path, mlflow_db):
    """`resume=R algo=aent` on a GRPO run: the user named aent, the run is GRPO: refused, not ignored."""
    root = tmp_path
    args = [f"tracking.uri=sqlite:///{root}/mlflow.db", f"trainer.output_dir={root}/runs", "trainer.run_name=G",
            "trainer.steps=1", *SHAPE]
    assert runner.invoke(app, ["train", "algo=grpo", *args]).exit_code == 0
    refused(["train", f"resume={root}/runs/G", *args, "trainer.steps=2", "algo=aent"], "algo.name=aent (run: grpo)")
    result = runner.invoke(app, ["train", f"resume={root}/runs/G", *args, "trainer.steps=2"])
    assert result.exit_code == 0, result.output  # continues as GRPO
    saved = json.loads((root / "runs" / "G" / "checkpoints" / "step_000002" / "trainer_state.json").read_text())
    client = store.client(f"sqlite:///{root}/mlflow.db")
    assert client.get_run(saved["mlflow_run_id"]).data.params["algo.name"] == "grpo"


def test_allowed_overrides_are_honoured(run, tmp_path):
    run_dir, args = run
    result = runner.invoke(app, args + ["trainer.steps=6", "trainer.checkpoint_every=2", "trainer.keep_checkpoints=9",
                                        "tracking.log_every=1", "eval.benchmarks=[aime24]"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert names == [f"step_{s:06d}" for s in (1, 2, 3, 4, 6)]


def test_store_missing_is_refused_and_no_store_is_made(run, tmp_path, empty_store):
    run_dir, args = run
    (tmp_path / "mlflow.db").unlink()
    refused(args, "does not exist", "tracking.uri=")
    assert not (tmp_path / "mlflow.db").exists()
    other = tmp_path / "other.db"
    shutil.copyfile(empty_store, other)  # an existing store without the run
    refused([a if not a.startswith("tracking.uri=") else f"tracking.uri=sqlite:///{other}" for a in args],
            "has no run")


def test_resume_finds_the_runs_own_store_from_another_directory(run, tmp_path, monkeypatch):
    """No tracking.uri on the command line: the store the run was recorded in (kept absolute)."""
    run_dir, args = run
    state_file = ckpt(run_dir, 3) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["tracking_uri"] = f"sqlite:///{tmp_path}/mlflow.db"  # the copy stands in for the original
    state["state_sha256"] = state_digest(state)  # as if written so (a hand edit alone is refused)
    state_file.write_text(json.dumps(state))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, [a for a in args if not a.startswith("tracking.uri=")])
    assert result.exit_code == 0, result.output
    assert not (elsewhere / "mlflow.db").exists()
    assert status(tmp_path, run_dir) == "FINISHED"


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_deepspeed_resume_reads_zero_files_without_unpickling_payloads(tmp_path, stage):
    """DeepSpeed's own loader unpickles with weights_only=False; the backend's load_zero reads every
    ZeRO file with weights_only=True and an allow-list: a real checkpoint loads, one whose optimizer
    file carries a payload is refused naming the file, and the payload never runs (one CPU process,
    bounded by a deadline)."""
    import socket
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "ds_safe_load_worker.py"), str(tmp_path),
                           str(stage), str(port)], env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["loaded"] is True
    if stage:  # ZeRO's optimizer files pickle DeepSpeed classes: the allow-list is needed
        assert any(report["unsafe"].values())
    assert report["refused"] and report["target"] in report["refused"]
    assert "cannot be loaded safely" in report["refused"]
    assert report["payload_ran"] is False
