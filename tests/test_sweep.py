"""`aent sweep` and `aent ablate`: Hydra-style expansion, fail-fast validation, and real sweeps of the
embedded tiny model into a real SQLite MLflow store (parent run, nested child runs, summary, figures,
failure isolation, parallel jobs, Ctrl-C)."""
import csv
import io
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.errors import ConfigError
from aent_cli.sweep import expand_jobs, load_sweep_file, plan_sweep
from aent_cli.sweep.runner import absolute_uri
from aent_cli.sweep.spec import SweepFile, parse_sweep_file
from aent_cli.tracking import store
from proc_wait import terminal_sigint

runner = CliRunner()
# A handful of cheap steps of the embedded model; validation only at step 0 unless a test asks more.
TINY = ["trainer.steps=2", "trainer.val_every=0", "data.val_size=4", "rollout.n=4", "trainer.batch_size=4",
        "trainer.mini_batch_size=4"]


@pytest.fixture
def bare_cwd(tmp_path, monkeypatch):
    """A fresh working directory: the default store is ./mlflow.db there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield tmp_path
    # joblib keeps its loky worker processes for the next sweep in this process; they were started in
    # tmp_path, which pytest deletes once the test passed, so the next sweep's jobs would find no cwd
    from joblib.externals.loky import reusable_executor

    if reusable_executor._executor is not None:
        reusable_executor._executor.shutdown(wait=True)


@pytest.fixture
def cwd(bare_cwd, empty_store):
    shutil.copyfile(empty_store, bare_cwd / "mlflow.db")
    return bare_cwd


@pytest.fixture
def workdir(cwd, tiny_cache):
    """`cwd` with the embedded model already warm-started (once per test session)."""
    return cwd


def _client(workdir):
    # Absolute: MLflow caches a store per URI string, so a relative one would follow the first test's cwd.
    return store.client(f"sqlite:///{workdir}/mlflow.db")


def _texts(jobs):
    return [job.overrides for job in jobs]


def _children(client, parent_id):
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {int(r.data.tags["aent.sweep.job"]): r for r in runs}


def _sweep_parents(client):
    exp = client.get_experiment_by_name("aent")
    return client.search_runs([exp.experiment_id], "tags.`aent.kind` = 'sweep'")


def _history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def _summary_rows(client, parent_id, tmp_path):
    local = client.download_artifacts(parent_id, "summary.csv", str(tmp_path / "dl"))
    return list(csv.DictReader(io.StringIO(Path(local).read_text())))


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("pragma integrity_check").fetchone()[0]


# --- expansion: Hydra's grammar and the sweep files --------------------------------------------------


def test_inline_overrides_expand_with_hydra_grammar():
    jobs = expand_jobs(SweepFile("inline"), ["algo=aent", "algo.p=0.1,0.2", "trainer.seed=range(2)",
                                             "algo.coef.mode=choice(adaptive,constant)"])
    assert _texts(jobs) == [
        ["algo=aent", "algo.p=0.1", "trainer.seed=0", "algo.coef.mode=adaptive"],
        ["algo=aent", "algo.p=0.1", "trainer.seed=0", "algo.coef.mode=constant"],
        ["algo=aent", "algo.p=0.1", "trainer.seed=1", "algo.coef.mode=adaptive"],
        ["algo=aent", "algo.p=0.1", "trainer.seed=1", "algo.coef.mode=constant"],
        ["algo=aent", "algo.p=0.2", "trainer.seed=0", "algo.coef.mode=adaptive"],
        ["algo=aent", "algo.p=0.2", "trainer.seed=0", "algo.coef.mode=constant"],
        ["algo=aent", "algo.p=0.2", "trainer.seed=1", "algo.coef.mode=adaptive"],
        ["algo=aent", "algo.p=0.2", "trainer.seed=1", "algo.coef.mode=constant"],
    ]
    assert jobs[5].label == "algo.p=0.2 trainer.seed=0 algo.coef.mode=constant"  # only what differs


def test_project_sweep_files():
    p = expand_jobs(load_sweep_file("p"), [])
    assert _texts(p) == [["algo=aent", f"algo.p={v}"] for v in ("0.1", "0.2", "0.33", "0.5")]

    bounds = expand_jobs(load_sweep_file("bounds"), ["trainer.seed=0,1"])
    pairs = {(j.overrides[1], j.overrides[2]) for j in bounds}
    assert len(bounds) == 6 and pairs == {("algo.h_low=0.05", "algo.h_high=0.15"),
                                          ("algo.h_low=0.1", "algo.h_high=0.2"),
                                          ("algo.h_low=0.15", "algo.h_high=0.25")}
    assert bounds[1].label == "low band trainer.seed=1"

    methods = expand_jobs(load_sweep_file("methods"), [])
    combos = {tuple(j.overrides) for j in methods}
    assert len(methods) == 21 == len(combos)
    assert ("algo=aent", "trainer.seed=2") in combos and ("algo=kl_cov", "trainer.seed=0") in combos

    coef = expand_jobs(load_sweep_file("ablate_coef"), [])
    assert [(j.label, j.overrides) for j in coef] == [("adaptive", ["algo=aent", "algo.coef.mode=adaptive"]),
                                                      ("constant", ["algo=aent", "algo.coef.mode=constant"])]


def test_command_line_replaces_file_values():
    # A key a job set defines is replaced in that set only (GRPO and EntReg get no p); others join every job.
    jobs = expand_jobs(load_sweep_file("ablate_p"), ["algo.p=0.2,0.5", "trainer.steps=3"])
    assert [(j.label, j.overrides) for j in jobs] == [
        ("GRPO", ["algo=grpo", "trainer.steps=3"]),
        ("EntReg", ["algo=entreg", "trainer.steps=3"]),
        ("AEnt algo.p=0.2", ["algo=aent", "algo.p=0.2", "trainer.steps=3"]),
        ("AEnt algo.p=0.5", ["algo=aent", "algo.p=0.5", "trainer.steps=3"]),
    ]
    # A params key given on the command line replaces the file's list (Hydra's later-wins rule).
    assert _texts(expand_jobs(load_sweep_file("p"), ["algo.p=0.25"])) == [["algo=aent", "algo.p=0.25"]]


def test_sweep_file_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="algo.p is set both"):
        expand_jobs(parse_sweep_file({"overrides": ["algo.p=0.1"], "jobs": [["algo.p=0.2"]]}, None, "x"), [])
    with pytest.raises(ConfigError, match="unknown key"):
        parse_sweep_file({"param": {"algo.p": "0.1"}}, None, "x")
    with pytest.raises(ConfigError, match="only hydra.sweeper.params"):
        parse_sweep_file({"hydra": {"launcher": {"n_jobs": 2}}}, None, "x")
    with pytest.raises(ConfigError, match="jobs must be a list of override sets, got 3"):
        parse_sweep_file({"jobs": 3}, None, "x")
    with pytest.raises(ConfigError, match="no sweep file 'nope'.*methods"):
        load_sweep_file("nope")
    with pytest.raises(ConfigError, match="bad override in the command line"):
        expand_jobs(SweepFile("inline"), ["algo.p=(0.1"])
    path = tmp_path / "mine.yaml"
    path.write_text("jobs:\n  - [algo=grpo]\n  - {label: hot, overrides: {algo: aent, algo.p: 0.5}}\n")
    assert [(j.label, j.overrides) for j in expand_jobs(load_sweep_file(str(path)), [])] == [
        ("algo=grpo", ["algo=grpo"]), ("hot", ["algo=aent", "algo.p=0.5"])]


def test_every_job_is_validated_before_anything_runs(bare_cwd):
    with pytest.raises(ConfigError, match=r"sweep job #1 \(algo.p=1.5\): algo.p=1.5 is out of range"):
        plan_sweep(None, ["algo.p=0.2,1.5"])
    with pytest.raises(ConfigError, match="tracking.experiment differs"):
        plan_sweep(None, ["tracking.experiment=a,b"])
    result = runner.invoke(app, ["sweep", "algo=aent", "algo.p=0.2,1.5"])
    assert result.exit_code == 2 and "sweep job #1" in result.output
    result = runner.invoke(app, ["sweep", "p", "hydra/launcher=nope"])
    assert result.exit_code == 2 and "launcher 'nope'" in result.output
    assert not (bare_cwd / "mlflow.db").exists()  # failed before the store was touched


def test_a_broken_launcher_is_recorded_and_reported(cwd, monkeypatch):
    # Hydra composes each job again in the worker: a conf/ file edited into a broken state mid-sweep
    # raises from the launcher itself, not from a job.
    import aent_cli.sweep.runner as sweep_runner

    def broken(jobs, task, options):
        raise RuntimeError("In 'data/arithmetic': key not in DataConfig")

    monkeypatch.setattr(sweep_runner, "launch", broken)
    result = runner.invoke(app, ["sweep", "algo=aent", "algo.p=0.2,0.5"])
    assert result.exit_code == 1
    assert "the launcher stopped the sweep: RuntimeError: In 'data/arithmetic'" in result.output
    assert "2 of 2 sweep job(s) did not finish" in result.output
    client = _client(cwd)
    (parent,) = _sweep_parents(client)
    assert parent.info.status == "FAILED" and parent.data.tags["aent.error"].startswith("RuntimeError")
    assert _children(client, parent.info.run_id) == {}
    rows = _summary_rows(client, parent.info.run_id, cwd)
    assert [r["status"] for r in rows] == ["NOT RUN", "NOT RUN"]


def test_local_store_uri_made_absolute(bare_cwd):
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{bare_cwd.resolve()}/mlflow.db"
    assert absolute_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_uri("http://host:5000") == "http://host:5000"


# --- real sweeps ----------------------------------------------------------------------------------------


def test_two_job_sweep_records_parent_children_and_summary(workdir):
    result = runner.invoke(app, ["sweep", "algo=aent", "algo.p=0.2,0.5", *TINY, "trainer.val_every=2"])
    assert result.exit_code == 0, result.output
    client = _client(workdir)
    (parent,) = _sweep_parents(client)
    assert parent.info.status == "FINISHED" and parent.data.tags["aent.sweep.launcher"] == "basic"
    children = _children(client, parent.info.run_id)
    assert sorted(children) == [0, 1]
    rows = _summary_rows(client, parent.info.run_id, workdir)
    assert [r["label"] for r in rows] == ["#0 algo.p=0.2", "#1 algo.p=0.5"]
    for index, p in ((0, "0.2"), (1, "0.5")):
        child = children[index]
        assert child.info.status == "FINISHED" and child.data.tags["aent.kind"] == "train"
        assert child.data.tags["aent.override.algo.p"] == p and child.data.params["algo.p"] == p
        assert child.data.tags["aent.sweep.overrides"].startswith(f"algo=aent algo.p={p} trainer.steps=2")
        clamped = _history(client, child.info.run_id, "actor/clamped_entropy")
        val = _history(client, child.info.run_id, "val/acc")
        assert [s for s, _ in clamped] == [1, 2] and [s for s, _ in val] == [0, 2]
        # The summary row is the child's own history: final and best val, final H~ and lambda.
        row = rows[index]
        assert float(row["clamped"]) == clamped[-1][1]
        assert float(row["val_final"]) == val[-1][1] and float(row["val_best"]) == max(v for _, v in val)
        assert float(row["lambda"]) == _history(client, child.info.run_id, "actor/entropy_coef")[-1][1]
        assert row["status"] == "FINISHED" and row["run id"] == child.info.run_id
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"summary.csv", "summary.md", "jobs.json"} <= artifacts
    assert {"figures/best_score_vs_p.png", "figures/clamped_entropy_over_steps.png",
            "figures/entropy_coef_over_steps.png", "figures/score_over_steps.png"} <= figures
    assert "algo.p=0.5" in result.output and "FINISHED" in result.output  # the terminal table


def test_failing_job_is_isolated_in_a_parallel_sweep(workdir):
    args = ["sweep", "--jobs", "2", "algo=aent", "data.train=arithmetic,/nonexistent/train.jsonl", "algo.p=0.2,0.5",
            *TINY]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "2 of 4 sweep job(s) did not finish" in result.output and "#2 data.train=/nonexistent" in result.output
    client = _client(workdir)
    (parent,) = _sweep_parents(client)
    assert parent.info.status == "FAILED" and parent.data.tags["aent.sweep.launcher"] == "joblib"
    children = _children(client, parent.info.run_id)
    assert sorted(children) == [0, 1, 2, 3]
    for index in (2, 3):
        assert children[index].info.status == "FAILED"
        assert "DataError: /nonexistent/train.jsonl: no such file" in children[index].data.tags["aent.error"]
    ok = [children[0], children[1]]
    for child in ok:
        assert child.info.status == "FINISHED"
        for key in ("reward/mean", "actor/clamped_entropy", "actor/entropy_coef"):
            assert [s for s, _ in _history(client, child.info.run_id, key)] == [1, 2]  # each step exactly once
        assert len(child.data.params) == len(children[0].data.params) > 50
    # Two worker processes wrote the one SQLite file (whether their short runs overlapped in time depends on
    # when each worker came up: test_concurrent_writers_keep_every_write forces the overlap).
    assert len({c.data.tags["aent.sweep.process"] for c in children.values()}) == 2
    assert _integrity(workdir / "mlflow.db") == "ok"


def _writer(uri, parent_id, index, steps, barrier):
    """What a sweep job writes, from its own process: a tagged child run, ~100 params, metrics every step."""
    from aent_cli.sweep.task import job_tags

    client = store.client(uri)
    exp = client.get_run(parent_id).info.experiment_id
    barrier.wait()  # every writer starts at once
    run_id = client.create_run(exp, tags={**job_tags(index, f"w{index}", [f"trainer.seed={index}"]),
                                          "mlflow.parentRunId": parent_id}).info.run_id
    store.log_params(client, run_id, {f"p{k}": str(k) for k in range(120)})
    for step in range(1, steps + 1):
        store.log_metrics(client, run_id, {f"m/{k}": step + k / 100 for k in range(15)}, step)
    client.set_terminated(run_id, "FINISHED")


def test_concurrent_writers_keep_every_write(cwd):
    # The default store under parallel jobs: MLflow's SQLite sessions wait on a lock (busy_timeout 20 s)
    # rather than fail, so no journal change is needed; this checks no write is lost or doubled.
    import multiprocessing

    uri = f"sqlite:///{cwd}/mlflow.db"
    client = store.client(uri)  # as in a sweep, the store exists before any job starts
    parent = client.create_run(store.experiment_id(client, "aent"), tags={"aent.kind": "sweep"}).info.run_id
    writers, steps = 3, 15
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers)
    procs = [ctx.Process(target=_writer, args=(uri, parent, i, steps, barrier)) for i in range(writers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0] * writers
    children = _children(client, parent)
    assert sorted(children) == list(range(writers))
    for run in children.values():
        assert run.info.status == "FINISHED" and len(run.data.params) == 120
        assert _history(client, run.info.run_id, "m/7") == [(s, s + 0.07) for s in range(1, steps + 1)]
    spans = sorted((r.info.start_time, r.info.end_time) for r in children.values())
    assert all(start < spans[0][1] for start, _ in spans[1:])  # all of them were writing at the same time
    assert _integrity(cwd / "mlflow.db") == "ok"


def _job_has_metrics(db: Path, index: int) -> bool:
    """Read-only probe with sqlite3 (an MLflow client here could race the sweep creating the store)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("select count(*) from metrics m join tags t on t.run_uuid = m.run_uuid where "
                               "t.key = 'aent.sweep.job' and t.value = ? and m.key = 'reward/mean'",
                               (str(index),)).fetchone()[0] > 0
    except sqlite3.Error:
        return False


def test_ctrl_c_keeps_finished_jobs_and_closes_the_rest(workdir):
    # Job 0 is short, job 1 long: interrupt once job 1 is training (so job 0 has finished), as a terminal
    # Ctrl-C would: SIGINT to the whole foreground process group.
    cmd = [sys.executable, "-m", "aent_cli", "sweep", "algo=aent", "trainer.steps=2,400", *TINY[1:]]
    log = workdir / "sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=terminal_sigint)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not _job_has_metrics(workdir / "mlflow.db", 1):
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=300)  # closing runs and drawing the summary figures is slow on a loaded machine
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text()
    assert proc.returncode == 130, output
    assert "interrupted: finished jobs are kept" in output
    client = _client(workdir)
    (parent,) = _sweep_parents(client)
    children = _children(client, parent.info.run_id)
    assert parent.info.status == "KILLED"
    assert children[0].info.status == "FINISHED" and len(_history(client, children[0].info.run_id, "reward/mean")) == 2
    assert children[1].info.status == "KILLED"
    assert _integrity(workdir / "mlflow.db") == "ok"
    assert "summary.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def _coef_next(lam, h, algo):
    """Eq. 4.1, written out independently of aent_cli.algos.coef."""
    new = lam - algo["lr"] * min(h - algo["h_low"], 0.0) + algo["lr"] * min(algo["h_high"] - h, 0.0)
    return min(max(new, algo["min"]), algo["max"])


def test_ablate_coef_adaptive_vs_constant(workdir):
    steps = 3
    # A band below any sampled H~ (temperature 1), so eq. 4.1 moves lambda from the first update on.
    result = runner.invoke(app, ["ablate", "coef", "--jobs", "2", *TINY, f"trainer.steps={steps}",
                                 "algo.coef.start_step=1", "algo.h_low=0.0", "algo.h_high=0.01"])
    assert result.exit_code == 0, result.output
    client = _client(workdir)
    (parent,) = _sweep_parents(client)
    assert parent.data.tags["aent.ablation"] == "coef" and parent.info.status == "FINISHED"
    children = _children(client, parent.info.run_id)
    labels = {i: c.data.tags["aent.sweep.label"] for i, c in children.items()}
    assert labels == {0: "adaptive", 1: "constant"}
    lam = {i: [v for _, v in _history(client, c.info.run_id, "actor/entropy_coef")] for i, c in children.items()}
    params = children[0].data.params
    init = float(params["algo.coef.init"])
    assert lam[1] == [init] * steps  # constant: lambda stays at coef.init
    algo = {k: float(params[f"algo.{k}"]) for k in ("h_low", "h_high")}
    algo.update({k: float(params[f"algo.coef.{k}"]) for k in ("lr", "min", "max")})
    entropy = [v for _, v in _history(client, children[0].info.run_id, "actor/clamped_entropy")]
    expected = [init]
    for h in entropy[:-1]:
        expected.append(_coef_next(expected[-1], h, algo))
    assert lam[0] == pytest.approx(expected, abs=1e-9) and lam[0] != lam[1]
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/fig5_adaptive_vs_constant_coef.png" in figures


def test_ablate_p_with_reference_methods(workdir):
    result = runner.invoke(app, ["ablate", "p", "algo.p=0.2,0.5", "--jobs", "2", *TINY])
    assert result.exit_code == 0, result.output
    client = _client(workdir)
    (parent,) = _sweep_parents(client)
    children = _children(client, parent.info.run_id)
    seen = [(c.data.tags["aent.sweep.label"], c.data.params["algo.bonus"], c.data.params["algo.p"])
            for _, c in sorted(children.items())]
    assert [s[:2] for s in seen] == [("GRPO", "none"), ("EntReg", "full"), ("AEnt algo.p=0.2", "clamped"),
                                     ("AEnt algo.p=0.5", "clamped")]
    assert [s[2] for s in seen[2:]] == ["0.2", "0.5"]
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"figures/fig6_clamping_percentage.png", "figures/best_score_vs_p.png"} <= figures
    assert len(_summary_rows(client, parent.info.run_id, workdir)) == 4


def test_fast_validation_gives_the_configs_of_a_full_compose_per_job():
    """plan_sweep validates a grid with one compose per set of group overrides: each job's config
    equals the one `compose_config(job.overrides)` gives (groups, nested keys, lists, interpolations)."""
    from omegaconf import OmegaConf

    from aent_cli.config import compose_config, validate
    from aent_cli.sweep.runner import validate_jobs
    from aent_cli.sweep.spec import Job

    grids = [["algo=grpo", "trainer.seed=1"], ["algo.p=0.2", "algo.coef.mode=constant", "trainer.betas=[0.8,0.95]"],
             ["algo=grpo", "trainer.seed=2", "data=math"], ["trainer.seed=3"], [], ["+experiment=setting_a"],
             ["algo.p=0.5", "trainer.lr=1e-5"]]
    jobs = [Job(i, overrides) for i, overrides in enumerate(grids)]
    fast = [OmegaConf.to_container(cfg, resolve=False) for cfg in validate_jobs(jobs)]
    full = [OmegaConf.to_container(validate(compose_config(job.overrides)), resolve=False) for job in jobs]
    assert fast == full


def test_fast_validation_names_the_bad_job_as_a_full_compose_does():
    from aent_cli.sweep.runner import validate_jobs
    from aent_cli.sweep.spec import Job

    for bad in ("trainer.stpes=3", "trainer.steps=abc", "algo.p=7.0"):
        jobs = [Job(0, ["trainer.seed=1"]), Job(1, ["trainer.seed=2", bad])]
        with pytest.raises(ConfigError, match=r"sweep job #1") as caught:
            list(validate_jobs(jobs))
        assert bad.split("=")[0] in str(caught.value)


def test_a_9000_job_dry_run_prints_its_ends_and_what_varies(capsys):
    """Expansion and printing of a big grid: the first and last 20 jobs and a summary line."""
    from rich.console import Console

    from aent_cli.cli.sweep_cmd import print_jobs
    from aent_cli.sweep.hydra_session import hydra_session
    from aent_cli.sweep.spec import SweepFile, expand_jobs

    with hydra_session() as loader:
        jobs = expand_jobs(SweepFile(name="inline"), ["algo.p=0.2,0.33,0.5", "trainer.seed=range(3000)"], loader)
    assert len(jobs) == 9000 and jobs[-1].overrides == ["algo.p=0.5", "trainer.seed=2999"]

    class Plan:
        name = "inline"

    Plan.jobs = jobs
    print_jobs(Plan, Console(width=200))
    out = capsys.readouterr().out
    assert "9000 job(s), the first and last 20 shown" in out and "8960 more job(s)" in out
    assert "trainer.seed=2999" in out and "trainer.seed=1000 " not in out
    assert "algo.p: 3 value(s), trainer.seed: 3000 value(s)" in out


@pytest.mark.parametrize("overrides,says", [
    (["trainer.seed=range(1000)", "algo.p=range(1000)"], "expands to 1,000,000 jobs (at most 10,000)"),
    (["trainer.seed=range(1000000000)"], "expands to 1,000,000,000 jobs"),  # counted, never materialised
    (["trainer.seed=range(0,10,0)"], "trainer.seed: range() with step 0"),
])
def test_a_grid_too_big_or_a_zero_step_is_one_error_before_expansion(overrides, says):
    from aent_cli.sweep.hydra_session import hydra_session
    from aent_cli.sweep.spec import SweepFile, expand_jobs

    with hydra_session() as loader:
        with pytest.raises(ConfigError, match=re.escape(says)):
            expand_jobs(SweepFile(name="inline"), overrides, loader)
