"""Metric-vs-step figures as PNG (matplotlib, Agg backend: no display needed).

`plot_metric_over_steps` draws one panel; `plot_panels` puts several side by side (Fig. 4: entropy and
response length). Both take histories as {label: [(step, value), ...]} so the report, sweeps and
ablations (Fig. 5/6) feed them straight from `tracking.store.metric_history`.

Each run gets its own colour, line style and marker (identical curves stay visible on top of each
other). With `smoothing` > 0 the raw per-step values are drawn faintly and an exponential moving average
(TensorBoard's smoothing, debiased at the start) on top, for series of at least 10 points. A panel can
shade a band (the clamped-entropy band [h_low, h_high]) and draw horizontal reference lines (the
coefficient bounds lambda_min, lambda_max).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

Histories = Mapping[str, Sequence[Tuple[float, float]]]
DEFAULT_SMOOTHING = 0.6  # EMA weight of the previous smoothed value; 0 = raw values only
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P")
MIN_SMOOTHED_POINTS = 10  # sparser series (val/acc every 20 steps) are drawn as measured


@dataclass
class Panel:
    histories: Histories
    title: str
    ylabel: str
    xlabel: str = "step"
    logy: bool = False
    bands: Sequence[Tuple[float, float, str]] = field(default_factory=tuple)  # (low, high, legend label)
    hlines: Sequence[Tuple[float, str]] = field(default_factory=tuple)  # (y, legend label)
    smoothable: bool = True  # False when x is not a step (e.g. best score vs p)


def smooth(values: Sequence[float], window: int) -> List[float]:
    """Trailing moving average over `window` points (1 = unchanged); the start averages what it has."""
    if window <= 1:
        return list(values)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def ema(values: Sequence[float], weight: float, debias: bool = True) -> List[float]:
    """Exponential moving average s_t = weight * s_{t-1} + (1 - weight) * x_t; weight 0 returns the values.

    debias=True (TensorBoard's smoothing, the report's figures): s_0 = 0 and each s_t is divided by
    (1 - weight^t), so the first points are not pulled toward 0. debias=False (the methods figure):
    s_1 = x_1, seeded with the first value. ValueError for a weight outside [0, 1)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight {weight} is not in [0, 1)")
    out: List[float] = []
    last = 0.0
    for t, value in enumerate(values, start=1):
        if debias:
            last = weight * last + (1.0 - weight) * value
            out.append(last / (1.0 - weight ** t))
        else:
            last = value if t == 1 else weight * last + (1.0 - weight) * value
            out.append(last)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, panel: Panel, smooth_window: int, smoothing: float) -> int:
    drawn = 0
    for low, high, label in panel.bands:
        ax.axhspan(low, high, color="tab:green", alpha=0.12, label=label, zorder=0)
    for y, label in panel.hlines:
        ax.axhline(y, color="0.35", linestyle=(0, (4, 3)), linewidth=1.0, label=label, zorder=1)
    for index, (label, points) in enumerate(panel.histories.items()):
        if not points:
            continue
        points = sorted(points)
        steps = [p[0] for p in points]
        values = smooth([p[1] for p in points], smooth_window)
        style = {"color": f"C{index % 10}", "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
                 "marker": MARKERS[index % len(MARKERS)], "markevery": max(1, len(points) // 8), "markersize": 4}
        if smoothing > 0 and panel.smoothable and len(points) >= MIN_SMOOTHED_POINTS:
            ax.plot(steps, values, color=style["color"], linewidth=0.8, alpha=0.3)
            values = ema(values, smoothing)
        ax.plot(steps, values, label=label, linewidth=1.6, **style)
        drawn += 1
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_title(panel.title)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    if panel.logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return drawn


def plot_panels(panels: Sequence[Panel], path: str | Path, suptitle: Optional[str] = None,
                smooth_window: int = 1, smoothing: float = 0.0) -> Path:
    """Panels side by side in one PNG at `path` (parent folders created); returns the path.
    `smoothing`: EMA weight in [0, 1) drawn over the raw curve (0 = raw only)."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    try:
        for ax, panel in zip(axes[0], panels):
            _draw(ax, panel, smooth_window, smoothing)
        if suptitle:
            fig.suptitle(suptitle + (f"  (EMA smoothing {smoothing:g} over the faint raw values)" if smoothing else ""))
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def plot_metric_over_steps(histories: Histories, title: str, ylabel: str, path: str | Path,
                           xlabel: str = "step", smooth_window: int = 1, logy: bool = False,
                           smoothing: float = 0.0) -> Path:
    """One metric, one line per label, x = training step."""
    return plot_panels([Panel(histories, title, ylabel, xlabel, logy)], path, smooth_window=smooth_window,
                       smoothing=smoothing)


def has_data(histories: Histories) -> bool:
    return any(points for points in histories.values())


def select(histories_by_run: Mapping[str, Dict[str, Sequence[Tuple[float, float]]]], key: str) -> Dict[str, list]:
    """{label: {metric: points}} -> {label: points} for one metric."""
    return {label: list(metrics.get(key, [])) for label, metrics in histories_by_run.items()}


def _float(params: Mapping[str, str], key: str) -> Optional[float]:
    try:
        return float(params[key])
    except (KeyError, TypeError, ValueError):
        return None


def entropy_band(params: Mapping[str, str]) -> Optional[Tuple[float, float]]:
    """One run's H~ band (algo.h_low, algo.h_high) from its flattened params; None when either is missing."""
    low, high = _float(params, "algo.h_low"), _float(params, "algo.h_high")
    return None if low is None or high is None else (low, high)


def coef_range(params: Mapping[str, str]) -> Tuple[Optional[float], Optional[float]]:
    """One run's lambda bounds (algo.coef.min, algo.coef.max); None for a missing one."""
    return _float(params, "algo.coef.min"), _float(params, "algo.coef.max")


def entropy_bands(params_by_run: Sequence[Mapping[str, str]]) -> List[Tuple[float, float, str]]:
    """The distinct H~ bands [algo.h_low, algo.h_high] of the runs that steer the clamped entropy
    (algo.bonus=clamped with an adaptive coefficient), as shaded-band specs."""
    bands = []
    for params in params_by_run:
        if params.get("algo.bonus") != "clamped" or params.get("algo.coef.mode", "adaptive") != "adaptive":
            continue
        band = entropy_band(params)
        if band is not None and band not in bands:
            bands.append(band)
    return [(low, high, rf"$\tilde{{H}}$ band [{low:g}, {high:g}]") for low, high in bands]


def coef_bounds(params_by_run: Sequence[Mapping[str, str]]) -> List[Tuple[float, str]]:
    """The distinct lambda bounds (algo.coef.min / max) of the runs with an adaptive coefficient."""
    lines: List[Tuple[float, str]] = []
    for params in params_by_run:
        if params.get("algo.coef.mode") != "adaptive":
            continue
        for value, name in zip(coef_range(params), ("λ min", "λ max")):
            if value is not None and value not in [y for y, _ in lines]:
                lines.append((value, f"{name} {value:g}"))
    return lines
