"""The training curve published next to the model: `models/<model>/<version>/curve.png`.

Two panels over the epochs: the mean training loss, and the holdout metric the promotion gate
compares. Drawn with matplotlib's Agg canvas on a Figure of its own (no pyplot state), so it
needs no display and is safe to call from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CURVE_FILE = "curve.png"


def training_curve(
    losses: Sequence[float],
    scores: Sequence[float],
    metric: str,
    *,
    title: str = "",
) -> bytes:
    """A PNG of loss per epoch (left) and `metric` on the holdout per epoch (right).

    `scores` may be empty (no holdout metric was computed); its panel then says so.
    """
    figure = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, metric_axes = figure.subplots(1, 2)
    epochs = range(1, len(losses) + 1)
    loss_axes.plot(epochs, losses, color="tab:blue")
    loss_axes.set(title="training loss", xlabel="epoch", ylabel="mean loss")
    if losses and min(losses) > 0 and max(losses) / min(losses) > 20:
        loss_axes.set_yscale("log")
    if scores:
        metric_axes.plot(range(1, len(scores) + 1), scores, color="tab:orange")
        best = max(scores) if metric not in ("rmse", "mae", "log_loss") else min(scores)
        metric_axes.axhline(best, color="grey", linewidth=0.8, linestyle=":")
    else:
        metric_axes.text(0.5, 0.5, "not computed", ha="center", va="center")
    metric_axes.set(title=f"holdout {metric}", xlabel="epoch", ylabel=metric)
    for axes in (loss_axes, metric_axes):
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
