"""The training curve published next to the model: `models/<model>/<version>/curve.png`.

Two panels over the epochs: the losses (training, and the validation loss early stopping
watched), and the holdout metric the promotion gate compares. Every line is named in a legend,
a dashed vertical line marks each epoch where training resumed after an interruption, and the
loss axis is logarithmic: on a long run a linear one is flat after the first tenth. Drawn with
matplotlib's Agg canvas on a Figure of its own (no pyplot state), so it needs no display and is
safe to call from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dropflow.vocabulary.card import LOWER_IS_BETTER

CURVE_FILE = "curve.png"
RESUME_LABEL = "resumed after an interruption"


def curve_figure(
    losses: Sequence[float],
    scores: Sequence[float],
    metric: str,
    *,
    title: str = "",
    validation_losses: Sequence[float] = (),
    resumed_at: Sequence[float] = (),
) -> Figure:
    """The curve as a Figure: loss per epoch (left, log scale where every loss is above 0)
    and `metric` on the holdout per epoch (right), each line in its panel's legend.

    `scores` may be empty (no holdout metric was computed); its panel then says so.
    `validation_losses` (per epoch, may be empty) is drawn beside the training loss;
    `resumed_at` are the epochs (fractional: a resume may fall mid-epoch) where an attempt
    took over from an interrupted one's checkpoint.
    """
    figure = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, metric_axes = figure.subplots(1, 2)
    epochs = range(1, len(losses) + 1)
    loss_axes.plot(epochs, losses, color="tab:blue", label="training loss")
    if validation_losses:
        loss_axes.plot(
            range(1, len(validation_losses) + 1),
            validation_losses,
            color="tab:green",
            label="validation loss",
        )
    loss_axes.set(title="loss", xlabel="epoch", ylabel="mean loss")
    every_loss = [*losses, *validation_losses]
    if every_loss and min(every_loss) > 0:
        loss_axes.set_yscale("log")
    if scores:
        metric_axes.plot(
            range(1, len(scores) + 1), scores, color="tab:orange", label=f"holdout {metric}"
        )
        best = min(scores) if metric in LOWER_IS_BETTER else max(scores)
        metric_axes.axhline(
            best, color="grey", linewidth=0.8, linestyle=":", label=f"best {metric} ({best:.4g})"
        )
    else:
        metric_axes.text(0.5, 0.5, "not computed", ha="center", va="center")
    metric_axes.set(title=f"holdout {metric}", xlabel="epoch", ylabel=metric)
    for axes in (loss_axes, metric_axes):
        for n, epoch in enumerate(resumed_at):
            # One legend entry for all the marks: matplotlib skips labels starting with "_".
            label = RESUME_LABEL if n == 0 else f"_{RESUME_LABEL}"
            axes.axvline(epoch, color="tab:red", linewidth=0.8, linestyle="--", label=label)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def training_curve(
    losses: Sequence[float],
    scores: Sequence[float],
    metric: str,
    *,
    title: str = "",
    validation_losses: Sequence[float] = (),
    resumed_at: Sequence[float] = (),
) -> bytes:
    """The PNG of curve_figure(...) with the same arguments."""
    figure = curve_figure(
        losses,
        scores,
        metric,
        title=title,
        validation_losses=validation_losses,
        resumed_at=resumed_at,
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
