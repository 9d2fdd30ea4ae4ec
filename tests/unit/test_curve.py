"""curve.png: what a reader needs to read it (titles, legends, scales, resume marks), checked
on the matplotlib Figure rather than by comparing images."""

from __future__ import annotations

import pytest

from training.curve import RESUME_LABEL, curve_figure
from training.job import resumed_epochs

LOSSES = [1.1, 0.6, 0.3, 0.1, 0.05, 0.04]
VALIDATION = [1.2, 0.7, 0.4, 0.2, 0.15, 0.16]
SCORES = [0.6, 0.8, 0.9, 0.95, 0.97, 0.96]


def _legend(axes) -> list[str]:
    legend = axes.get_legend()
    return [text.get_text() for text in legend.get_texts()] if legend else []


def test_the_curve_is_titled_with_the_model_and_version():
    figure = curve_figure(LOSSES, SCORES, "accuracy", title="iris v20261123T101900Z-3f9a0c")

    assert figure.get_suptitle() == "iris v20261123T101900Z-3f9a0c"


def test_every_line_is_named_in_a_legend_the_dotted_one_included():
    loss, metric = curve_figure(LOSSES, SCORES, "accuracy", validation_losses=VALIDATION).get_axes()

    assert _legend(loss) == ["training loss", "validation loss"]
    assert _legend(metric) == ["holdout accuracy", "best accuracy (0.97)"]
    (dotted,) = [line for line in metric.get_lines() if line.get_linestyle() == ":"]
    assert dotted.get_label() == "best accuracy (0.97)"
    assert list(dotted.get_ydata()) == [0.97, 0.97]


def test_the_best_of_a_lower_is_better_metric_is_its_least():
    _, metric = curve_figure(LOSSES, [3.0, 2.0, 2.5], "rmse").get_axes()

    assert _legend(metric)[1] == "best rmse (2)"


def test_the_validation_loss_is_drawn_per_epoch_as_the_job_recorded_it():
    loss, _ = curve_figure(LOSSES, SCORES, "accuracy", validation_losses=VALIDATION).get_axes()

    (validation,) = [line for line in loss.get_lines() if line.get_label() == "validation loss"]
    assert list(validation.get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert list(validation.get_ydata()) == VALIDATION


def test_the_loss_axis_is_logarithmic():
    loss, metric = curve_figure(LOSSES, SCORES, "accuracy").get_axes()

    assert loss.get_yscale() == "log"
    assert metric.get_yscale() == "linear"


def test_a_loss_of_zero_keeps_a_linear_axis():
    loss, _ = curve_figure([0.5, 0.0], SCORES[:2], "accuracy").get_axes()

    assert loss.get_yscale() == "linear"  # log(0) has no place on a log axis


def test_a_resume_is_marked_on_both_panels_and_named_once():
    figure = curve_figure(LOSSES, SCORES, "accuracy", resumed_at=[2.5, 4.0])

    for axes in figure.get_axes():
        marks = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
        assert [list(m.get_xdata()) for m in marks] == [[2.5, 2.5], [4.0, 4.0]]
        assert _legend(axes).count(RESUME_LABEL) == 1


def test_a_run_that_never_resumed_has_no_resume_mark():
    figure = curve_figure(LOSSES, SCORES, "accuracy")

    for axes in figure.get_axes():
        assert RESUME_LABEL not in _legend(axes)


def test_no_holdout_metric_says_so_and_has_no_empty_legend():
    _, metric = curve_figure(LOSSES, [], "accuracy").get_axes()

    assert [t.get_text() for t in metric.texts] == ["not computed"]
    assert metric.get_legend() is None


@pytest.mark.parametrize(
    ("resumes", "steps_per_epoch", "epochs"),
    [([], 10, []), ([0], 10, []), ([25], 10, [2.5]), ([30], 10, [3.0]), ([7, 25], 10, [0.7, 2.5])],
)
def test_the_job_marks_every_resume_at_the_epoch_of_its_checkpoint(
    resumes, steps_per_epoch, epochs
):
    assert resumed_epochs(resumes, steps_per_epoch) == epochs
