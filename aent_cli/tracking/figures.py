"""Metric-vs-step figures as PNG (matplotlib, Agg backend: no display needed).

`plot_metric_over_steps` draws one panel; `plot_panels` puts several side by side (Fig. 4: entropy and
response length). Both take histories as {label: [(step, value), ...]} so the report, sweeps and
ablations (Fig. 5/6) feed them straight from `tracking.store.metric_history`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

Histories = Mapping[str, Sequence[Tuple[float, float]]]


@dataclass
class Panel:
    histories: Histories
    title: str
    ylabel: str
    xlabel: str = "step"
    logy: bool = False


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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, panel: Panel, smooth_window: int) -> int:
    drawn = 0
    for label, points in panel.histories.items():
        if not points:
            continue
        points = sorted(points)
        steps = [p[0] for p in points]
        values = smooth([p[1] for p in points], smooth_window)
        ax.plot(steps, values, label=label, marker="o" if len(points) <= 12 else None, markersize=3, linewidth=1.5)
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
                smooth_window: int = 1) -> Path:
    """Panels side by side in one PNG at `path` (parent folders created); returns the path."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    try:
        for ax, panel in zip(axes[0], panels):
            _draw(ax, panel, smooth_window)
        if suptitle:
            fig.suptitle(suptitle)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def plot_metric_over_steps(histories: Histories, title: str, ylabel: str, path: str | Path,
                           xlabel: str = "step", smooth_window: int = 1, logy: bool = False) -> Path:
    """One metric, one line per label, x = training step."""
    return plot_panels([Panel(histories, title, ylabel, xlabel, logy)], path, smooth_window=smooth_window)


def has_data(histories: Histories) -> bool:
    return any(points for points in histories.values())


def select(histories_by_run: Mapping[str, Dict[str, Sequence[Tuple[float, float]]]], key: str) -> Dict[str, list]:
    """{label: {metric: points}} -> {label: points} for one metric."""
    return {label: list(metrics.get(key, [])) for label, metrics in histories_by_run.items()}
