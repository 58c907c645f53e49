"""Nothing lost or doubled across kills and concurrent starts (issue 15, points 5 and 6): a run killed
with SIGKILL between its metric flush and its checkpoint rename resumes with each step in the store
once; N processes opening a new SQLite store at once all succeed. Every subprocess is bounded by a
deadline; nothing waits by sleeping."""
import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from aent_cli.tracking import store

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 420
SHAPE = ["trainer.batch_size=4", "trainer.mini_batch_size=4", "rollout.n=4", "trainer.val_every=0",
         "data.val_size=16", "trainer.threads=1"]


def _env():
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


# SIGKILLs its own process when the step-4 checkpoint is about to be renamed into place: after the
# metrics of steps 1-4 were flushed to the store, before the checkpoint that covers steps 3-4 exists.
KILL_AT_RENAME = textwrap.dedent("""
    import os, signal, sys
    real_rename = os.rename
    def rename(src, dst, *args, **kwargs):
        if os.path.basename(str(src)) == ".tmp_step_000004":
            os.kill(os.getpid(), signal.SIGKILL)
        return real_rename(src, dst, *args, **kwargs)
    os.rename = rename
    from aent_cli.cli.app import app
    app(sys.argv[1:], prog_name="aent")
""")


def test_kill_between_flush_and_checkpoint_logs_each_step_once(tmp_path, tiny_cache, mlflow_db):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["train", f"tracking.uri={uri}", f"trainer.output_dir={tmp_path}/runs", "trainer.run_name=K",
            "trainer.steps=6", "trainer.checkpoint_every=2", "tracking.log_every=1", *SHAPE]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, *args], env=_env(), capture_output=True,
                            text=True, timeout=DEADLINE_S)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = tmp_path / "runs" / "K"
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_000002"
    client = store.client(uri)
    run = client.search_runs([client.get_experiment_by_name("aent").experiment_id])[0]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "reward/mean")) == [1, 2, 3, 4]

    resumed = subprocess.run([sys.executable, "-m", "aent_cli", *args, f"resume={run_dir}"], env=_env(),
                             capture_output=True, text=True, timeout=DEADLINE_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    keys = client.get_run(run.info.run_id).data.metrics.keys()
    assert "reward/mean" in keys and "actor/clamped_entropy" in keys
    for key in keys:
        # actor/entropy_collapse is defined once the first 5 steps are in (algos/collapse.py)
        expected = [5, 6] if key == "actor/entropy_collapse" else [1, 2, 3, 4, 5, 6]
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == expected, key
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


OPEN_STORE = textwrap.dedent("""
    import sys
    from aent_cli.tracking import store
    import mlflow.store.tracking.sqlalchemy_store  # what opening a store imports, before the start line
    print("ready", flush=True)
    sys.stdin.readline()  # all processes open the new store at the same moment: when the test says go
    client = store.client(sys.argv[1])
    exp = store.experiment_id(client, "aent")
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id)
    print(exp)
""")


def _collect(procs, deadline):
    """(returncode, stdout, stderr) of each process by `deadline` (monotonic); all killed if one is late."""
    out = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        out.append((proc.returncode, stdout, stderr))
    return out


def _run_all(commands, deadline_s):
    procs = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in commands]
    deadline = time.monotonic() + deadline_s
    return _collect(procs, deadline)


def _start_together(commands, deadline_s):
    """Start every command, wait until each has printed its "ready" line, then send all of them the
    go line at once; (returncode, stdout, stderr) of each."""
    procs = [subprocess.Popen(cmd, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for cmd in commands]
    deadline = time.monotonic() + deadline_s
    for proc in procs:
        ready = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]
        if not ready or proc.stdout.readline().strip() != "ready":
            for p in procs:
                p.kill()
            raise AssertionError(f"not ready within {deadline_s} s: {proc.communicate()[1][-2000:]}")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return _collect(procs, deadline)


def test_three_processes_create_a_new_store_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/new.db"
    results = _start_together([[sys.executable, "-c", OPEN_STORE, uri] for _ in range(3)], DEADLINE_S)
    for code, stdout, stderr in results:
        assert code == 0, stderr[-2000:]
    assert len({stdout.strip() for _, stdout, _ in results}) == 1  # one experiment, shared
    client = store.client(uri)
    assert len(client.search_runs([client.get_experiment_by_name("aent").experiment_id])) == 3


def test_three_train_runs_started_together_on_a_new_store(tmp_path, tiny_cache):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    commands = [[sys.executable, "-m", "aent_cli", "train", f"tracking.uri={uri}", f"trainer.output_dir={tmp_path}/runs",
                 f"trainer.run_name={name}", "trainer.steps=1", *SHAPE] for name in "XYZ"]
    for code, _, stderr in _run_all(commands, DEADLINE_S):
        assert code == 0, stderr[-2000:]
    client = store.client(uri)
    runs = client.search_runs([client.get_experiment_by_name("aent").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["X", "Y", "Z"]
    assert {r.info.status for r in runs} == {"FINISHED"}
