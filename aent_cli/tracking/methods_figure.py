"""The one figure of `aent ablate methods`: GRPO, EntReg and AEnt on the same default, over steps.

Six panels: token entropy H, clamped entropy H~ (with AEnt's band [h_low, h_high] shaded), the entropy
coefficient lambda (with AEnt's bounds [min, max] dashed), response length, val/acc, and the training
reward. Per-step values are drawn thin and faint, an EMA of them bold on top; each method keeps one
colour and line style, so a curve hidden under another still shows. PNG, matplotlib Agg (no display).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from aent_cli.tracking import figures

Points = Sequence[Tuple[float, float]]
STYLES = {"GRPO": ("tab:red", "-"), "EntReg": ("tab:blue", "--"), "AEnt": ("tab:green", "-.")}
_FALLBACK = [("tab:purple", ":"), ("tab:orange", "-"), ("tab:brown", "--"), ("tab:gray", "-.")]
PANELS = (("actor/entropy", "Token entropy H", "nats"),
          ("actor/clamped_entropy", "Clamped entropy H~ (AEnt's band shaded)", "nats"),
          ("actor/entropy_coef", "Entropy coefficient lambda (AEnt's bounds dashed)", "lambda"),
          ("response_length/mean", "Response length", "tokens"),
          ("val/acc", "val/acc (held-out, avg@4)", "accuracy"),
          ("reward/mean", "Training reward", "mean reward"))


@dataclass
class MethodCurves:
    label: str
    histories: Mapping[str, Points]  # metric -> [(step, value)]


def ema(values: Sequence[float], alpha: float) -> List[float]:
    """Exponential moving average, out[0] = values[0], out[i] = alpha * v[i] + (1 - alpha) * out[i-1]:
    figures.ema seeded with the first value, `alpha` the weight of the newest step (1 = unchanged)."""
    return figures.ema(values, 1.0 - alpha, debias=False)


def _style(label: str, index: int) -> Tuple[str, str]:
    base = label.split(" ")[0]
    return STYLES.get(base, _FALLBACK[index % len(_FALLBACK)])


def plot_methods(curves: Sequence[MethodCurves], path: Path, band: Optional[Tuple[float, float]] = None,
                 bounds: Optional[Tuple[float, float]] = None, alpha: float = 0.25,
                 title: str = "GRPO vs EntReg vs AEnt on the embedded default") -> Path:
    """Write the figure to `path` (folders created) and return it. `band`: AEnt's [h_low, h_high];
    `bounds`: AEnt's lambda [min, max]; `alpha`: the EMA weight of the newest step (1 = no smoothing)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    try:
        for ax, (key, panel_title, ylabel) in zip(axes.flat, PANELS):
            if key == "actor/clamped_entropy" and band is not None:
                ax.axhspan(band[0], band[1], color="tab:green", alpha=0.12, label=f"AEnt band [{band[0]:g}, {band[1]:g}]")
            if key == "actor/entropy_coef" and bounds is not None:
                for value in bounds:
                    ax.axhline(value, color="tab:green", linestyle=":", linewidth=1)
            drawn = 0
            for i, method in enumerate(curves):
                points = sorted(method.histories.get(key, []))
                if not points:
                    continue
                colour, style = _style(method.label, i)
                steps, values = [p[0] for p in points], [p[1] for p in points]
                sparse = len(points) <= 12  # val/acc: a few points, drawn with markers and no smoothing
                if not sparse:
                    ax.plot(steps, values, color=colour, linestyle="-", linewidth=0.7, alpha=0.3)
                ax.plot(steps, values if sparse else ema(values, alpha), color=colour, linestyle=style, linewidth=2.2,
                        marker="o" if sparse else None, markersize=5, label=method.label)
                drawn += 1
            ax.set_title(panel_title)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            if drawn:
                ax.legend(fontsize="small")
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        fig.suptitle(f"{title}  (thin: per step, bold: EMA alpha={alpha:g})")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def band_and_bounds(params_by_label: Mapping[str, Dict[str, str]]):
    """AEnt's band and lambda bounds from a job's flattened params (None when no AEnt job)."""
    for params in params_by_label.values():
        if params.get("algo.name") == "aent" and params.get("algo.coef.mode") == "adaptive":
            band, bounds = figures.entropy_band(params), figures.coef_range(params)
            if band is None or None in bounds:
                return None, None
            return band, bounds
    return None, None
