"""The `aent ablate methods` figure: EMA, AEnt's band and bounds from the job params, one PNG."""
import pytest

from aent_cli.sweep.ablations import get_ablation
from aent_cli.tracking.methods_figure import MethodCurves, band_and_bounds, ema, plot_methods


def test_ema_weights_the_newest_value_by_alpha():
    assert ema([1.0, 0.0, 0.0], 0.5) == pytest.approx([1.0, 0.5, 0.25])
    assert ema([3.0, 1.0], 1.0) == [3.0, 1.0]


def test_band_and_bounds_come_from_the_adaptive_aent_job():
    params = {"GRPO": {"algo.name": "grpo"},
              "AEnt": {"algo.name": "aent", "algo.coef.mode": "adaptive", "algo.h_low": "0.3", "algo.h_high": "0.4",
                       "algo.coef.min": "0.001", "algo.coef.max": "0.5"}}
    assert band_and_bounds(params) == ((0.3, 0.4), (0.001, 0.5))
    assert band_and_bounds({"GRPO": {"algo.name": "grpo"}}) == (None, None)


def test_plot_writes_one_png_and_the_ablation_is_registered(tmp_path):
    steps = range(1, 21)
    curves = [MethodCurves(label, {"actor/entropy": [(s, 1.0 / s) for s in steps], "val/acc": [(0, 0.2), (20, 0.9)]})
              for label in ("GRPO", "EntReg", "AEnt")]
    path = plot_methods(curves, tmp_path / "f" / "m.png", band=(0.1, 0.2), bounds=(0.001, 0.5))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    ablation = get_ablation("methods")
    assert ablation.sweep_file == "ablate_methods"
