"""Issue 16 points 6 and 8: rows labelled by what differs, titles naming the score shown, and figures
that explain themselves (H~ band, lambda bounds, a lambda panel in Fig. 5, EMA smoothing, line styles)."""
import pandas as pd
import pytest
from PIL import Image

from aent_cli.sweep.ablations import coef_figure
from aent_cli.sweep.spec import Job
from aent_cli.sweep.summary import JobOutcome
from aent_cli.tracking import figures, store
from aent_cli.tracking.report import make_report

AENT = {"algo.name": "aent", "algo.bonus": "clamped", "algo.coef.mode": "adaptive", "algo.h_low": "0.2",
        "algo.h_high": "0.25", "algo.coef.min": "0.0006", "algo.coef.max": "0.009", "trainer.seed": "0"}


@pytest.fixture
def p_sweep(tmp_path, monkeypatch, mlflow_db):
    """A sweep parent with AEnt at p=0.2 and p=0.5 and a GRPO reference, val/acc only."""
    monkeypatch.chdir(tmp_path)
    client = store.client(f"sqlite:///{tmp_path}/mlflow.db")
    exp = store.experiment_id(client, "s")
    parent = client.create_run(exp, run_name="sweep", tags={"aent.kind": "sweep"}).info.run_id
    for name, params in (("sweep-x-j0", {**AENT, "algo.p": "0.2", "trainer.run_name": "sweep-x-j0"}),
                         ("sweep-x-j1", {**AENT, "algo.p": "0.5", "trainer.run_name": "sweep-x-j1"}),
                         ("sweep-x-j2", {"algo.name": "grpo", "algo.bonus": "none", "algo.p": "0.33"})):
        run_id = client.create_run(exp, run_name=name, tags={"aent.kind": "train",
                                                             "mlflow.parentRunId": parent}).info.run_id
        store.log_params(client, run_id, params)
        for step in range(0, 30):
            store.log_metrics(client, run_id, {"actor/clamped_entropy": 0.3 - 0.003 * step,
                                               "actor/entropy_coef": 0.002 + 1e-4 * step}, step)
        store.log_metrics(client, run_id, {"val/acc": 0.5}, 29)
    return client, parent, tmp_path


def test_rows_are_labelled_by_what_differs(p_sweep):
    client, parent, tmp = p_sweep
    result = make_report(client, parent=parent, out_dir=tmp / "r", log_to=None)
    assert [row.label for row in result.table.rows] == ["AEnt p=0.2", "AEnt p=0.5", "GRPO"]


def test_title_names_the_score_actually_shown(p_sweep):
    client, parent, tmp = p_sweep
    result = make_report(client, parent=parent, score="pass", out_dir=tmp / "r", log_to=None)
    assert "pass@" not in result.title and "val/acc" in result.title
    assert "val/acc" in (tmp / "r" / "table1.md").read_text().splitlines()[0]


def test_ema_matches_pandas_debiased_ewm():
    values = [0.0, 10.0, 4.0, 7.0, 1.0, 3.0]
    for weight in (0.0, 0.6, 0.9):
        expected = pd.Series(values).ewm(alpha=1 - weight, adjust=True).mean().tolist() if weight else values
        assert figures.ema(values, weight) == pytest.approx(expected)
    with pytest.raises(ValueError):
        figures.ema(values, 1.0)


def test_panel_draws_band_bounds_and_distinct_styles():
    plt = figures._pyplot()
    fig, ax = plt.subplots()
    same = [(s, 0.2) for s in range(20)]
    panel = figures.Panel({"adaptive": same, "constant": same}, "t", "y",
                          bands=figures.entropy_bands([AENT]), hlines=figures.coef_bounds([AENT]))
    assert panel.bands == [(0.2, 0.25, r"$\tilde{H}$ band [0.2, 0.25]")]
    assert [y for y, _ in panel.hlines] == [0.0006, 0.009]
    figures._draw(ax, panel, 1, 0.6)
    [span] = ax.patches
    assert span.get_y() == pytest.approx(0.2) and span.get_height() == pytest.approx(0.05)
    labelled = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert {"λ min 0.0006", "λ max 0.009", "adaptive", "constant"} <= set(labelled)
    styles = {(labelled[n].get_linestyle(), labelled[n].get_marker()) for n in ("adaptive", "constant")}
    assert len(styles) == 2  # identical curves, still two visible lines
    raw = [line for line in ax.get_lines() if line.get_label().startswith("_") and line.get_alpha() == 0.3]
    assert len(raw) == 2  # the faint raw values under each smoothed line
    plt.close(fig)


def test_fig5_has_a_lambda_panel(tmp_path):
    def outcome(index, mode, coef):
        histories = {"val/acc": [(0, 0.3), (10, 0.5)], "actor/clamped_entropy": [(s, 0.22) for s in range(11)],
                     "response_length/mean": [(s, 9.0) for s in range(11)],
                     "actor/entropy_coef": [(s, coef(s)) for s in range(11)]}
        return JobOutcome(Job(index, [f"algo.coef.mode={mode}"], f"coef.mode={mode}"), "FINISHED", f"r{index}",
                          params={**AENT, "algo.coef.mode": mode}, histories=histories)

    [path] = coef_figure([outcome(0, "adaptive", lambda s: 0.002 + 1e-4 * s), outcome(1, "constant", lambda s: 0.002)],
                         tmp_path)
    with Image.open(path) as image:
        assert image.width > 3.5 * image.height  # four panels: score, length, H~, lambda
