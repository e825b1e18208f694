"""Training curves from Caffe logs (``caffelike plot LOG [LOG...] -o curves.png``).

By default one figure with three panels (train loss, test loss, test accuracy against
iterations), every log overlaid with a legend. ``--x seconds|lr`` changes the x axis,
``--chart-type N`` draws one of the eight charts of Caffe's ``plot_training_log.py``:

====  =====================================
0     Test accuracy vs. Iters
1     Test accuracy vs. Seconds
2     Test loss vs. Iters
3     Test loss vs. Seconds
4     Train learning rate vs. Iters
5     Train learning rate vs. Seconds
6     Train loss vs. Iters
7     Train loss vs. Seconds
====  =====================================

The output format follows the file name (PNG, SVG, PDF) through matplotlib's Agg backend.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from ..glog import get_logger
from .parse import Table, parse_log


@dataclass(frozen=True)
class Panel:
    """One chart: which table, which y series (by a column-name test) and its labels."""

    table: str  # "train" | "test"
    kind: str  # "loss" | "accuracy" | "lr"
    title: str


PANELS: dict[str, Panel] = {
    "train_loss": Panel("train", "loss", "Train loss"),
    "test_loss": Panel("test", "loss", "Test loss"),
    "test_accuracy": Panel("test", "accuracy", "Test accuracy"),
    "train_lr": Panel("train", "lr", "Train learning rate"),
    "train_accuracy": Panel("train", "accuracy", "Train accuracy"),
}
DEFAULT_PANELS = ("train_loss", "test_loss", "test_accuracy")

X_AXES: dict[str, tuple[str, str]] = {
    "iters": ("NumIters", "Iterations"),
    "seconds": ("Seconds", "Seconds"),
    "lr": ("LearningRate", "Learning rate"),
}

# Caffe's plot_training_log.py numbering: (panel, x axis)
CHART_TYPES: dict[int, tuple[str, str]] = {
    0: ("test_accuracy", "iters"), 1: ("test_accuracy", "seconds"),
    2: ("test_loss", "iters"), 3: ("test_loss", "seconds"),
    4: ("train_lr", "iters"), 5: ("train_lr", "seconds"),
    6: ("train_loss", "iters"), 7: ("train_loss", "seconds"),
}


def series_columns(table: Table, kind: str) -> list[str]:
    """Columns of a table holding a kind of series (``acc``/``accuracy@1``..., ``loss``...)."""
    if kind == "lr":
        return ["LearningRate"]
    outputs = table.columns[3:]
    if kind == "accuracy":
        return [c for c in outputs if "acc" in c.lower() or c.lower().startswith("top")]
    return [c for c in outputs if "loss" in c.lower()]


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (shorter at the start)."""
    if window <= 1:
        return list(values)
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _clip_initial_spike(ax, series: list[list[float]]) -> None:
    """Keep an untrained net's first loss (often 10-100x the rest) from flattening the curve."""
    import math

    rest = [v for ys in series for v in ys[1:] if math.isfinite(v)]
    firsts = [ys[0] for ys in series if ys and math.isfinite(ys[0])]
    if not rest or not firsts:
        return
    top = max(rest)
    if max(firsts) > 3 * top > 0:
        ax.set_ylim(bottom=min(0.0, min(rest)), top=top * 1.15)
        ax.annotate(f"iteration-0 value {max(firsts):.3g} off the chart", xy=(0.98, 0.97),
                    xycoords="axes fraction", ha="right", va="top", fontsize="x-small", color="gray")


def _label(log: str, column: str, n_columns: int, n_logs: int) -> str:
    name = os.path.basename(log)
    if n_columns > 1:
        return f"{name}: {column}" if n_logs > 1 else column
    return name


def draw(logs: Sequence[str], out: str, panels: Sequence[str] = DEFAULT_PANELS, x: str = "iters",
         smoothing: int = 1, width: int = 1200, height: int = 400, dpi: int = 100,
         title: str | None = None, log_y: bool = False) -> str:
    """Draw the panels for the logs into ``out``; returns the path written."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    tables = {log: dict(zip(("train", "test"), parse_log(log))) for log in logs}
    x_col, x_label = X_AXES[x]
    fig, axes = plt.subplots(1, len(panels), figsize=(width / dpi, height / dpi), dpi=dpi, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    try:
        for ax, key in zip(axes[0], panels):
            panel = PANELS[key]
            drawn = 0
            loss_values: list[list[float]] = []
            for li, log in enumerate(logs):
                table = tables[log][panel.table]
                columns = series_columns(table, panel.kind)
                for ci, col in enumerate(columns):
                    pts = [(r[x_col], r[col]) for r in table.rows if col in r and x_col in r]
                    if not pts:
                        continue
                    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                    if panel.kind == "loss":
                        loss_values.append(ys)
                    color = colors[(li * max(1, len(columns)) + ci) % len(colors)]
                    label = _label(log, col, len(columns), len(logs))
                    many = len(xs) > 60
                    style = {"linewidth": 1.2, "marker": None if many else "o", "markersize": 3}
                    if smoothing > 1 and panel.table == "train":
                        ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
                        ax.plot(xs, smooth(ys, smoothing), color=color, label=label, **style)
                    else:
                        ax.plot(xs, ys, color=color, label=label, **style)
                    drawn += 1
            ax.set_title(panel.title)
            ax.set_xlabel(x_label)
            ax.set_ylabel(panel.title.split(" ", 1)[1].capitalize())
            ax.grid(True, alpha=0.3)
            if log_y and panel.kind == "loss":
                ax.set_yscale("log")
            elif loss_values:
                _clip_initial_spike(ax, loss_values)
            if x == "lr":
                ax.set_xscale("log")
            if drawn:
                ax.legend(fontsize="small")
            else:
                ax.text(0.5, 0.5, "no data in the log", ha="center", va="center", transform=ax.transAxes)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        fig.savefig(out, dpi=dpi)
    finally:
        plt.close(fig)
    get_logger("plot").info("Wrote %s", out)
    return out

