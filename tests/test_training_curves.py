"""Training curves as small multiples: one panel per row, fixed colours, learning-rate drops marked."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from mlsp import report  # noqa: E402


def _row(label, epochs, rates, backbone="b0"):
    loss = list(np.linspace(4.0, 0.5, epochs))
    return {"label": label, "backbone": backbone, "history": {"loss": loss, "val_loss": [v + 0.2 for v in loss], "learning_rate": rates}}


def _panels(figure):
    return [axis for axis in figure.axes if axis.get_visible()]


def test_one_panel_per_row_with_the_same_two_colours_and_one_legend():
    rows = [_row(f"row {i}", 5 + i, [1e-4] * (5 + i)) for i in range(6)]
    figure = report.training_curves(rows)
    panels = _panels(figure)
    assert [axis.get_title() for axis in panels] == [f"row {i}" for i in range(6)]  # one backbone: not repeated
    assert len(figure.axes) == 8  # a 2 x 4 grid, the last two hidden
    for axis, row in zip(panels, rows):
        train, validation = axis.get_lines()[:2]
        assert train.get_color() == report.CURVE_COLOURS["train"] and validation.get_color() == report.CURVE_COLOURS["validation"]
        np.testing.assert_allclose(train.get_ydata(), row["history"]["loss"])
        assert list(train.get_xdata()) == list(range(1, len(row["history"]["loss"]) + 1))  # epochs from 1
        assert axis.get_yscale() == "log" and axis.get_legend() is None
    assert len(figure.legends) == 1
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["training loss", "validation loss", "learning rate ÷10"]


def test_learning_rate_drops_are_marked_between_the_epochs():
    rates = [1e-4] * 3 + [1e-5] * 4 + [1e-6] * 2  # drops before epochs 4 and 8
    axis = _panels(report.training_curves([_row("r", 9, rates)]))[0]
    marks = [line for line in axis.get_lines() if line.get_linestyle() == ":"]
    assert sorted(line.get_xdata()[0] for line in marks) == [3.5, 7.5]


def test_groups_title_their_rows_and_share_the_epoch_axis_only_within_a_group():
    figure = report.training_curves({"features": [_row("a", 40, [1e-4] * 40), _row("b", 20, [1e-4] * 20)], "fine-tuned": [_row("a", 5, [1e-4] * 5)]})
    features_a, features_b, finetuned_a = _panels(figure)
    assert [axis.get_title() for axis in (features_a, features_b, finetuned_a)] == ["a · features", "b · features", "a · fine-tuned"]
    assert features_a.get_xlim() == features_b.get_xlim()
    assert finetuned_a.get_xlim()[1] < 10 < features_a.get_xlim()[1]


def test_rows_of_several_backbones_name_the_backbone():
    figure = report.training_curves([_row("Pool-3FC", 4, [1e-4] * 4, "inception_v3"), _row("Pool-3FC", 4, [1e-4] * 4, "inception_resnet_v2")])
    assert [axis.get_title() for axis in _panels(figure)] == ["Pool-3FC · inception_v3", "Pool-3FC · inception_resnet_v2"]


def test_no_rows_gives_a_figure_that_says_so():
    figure = report.training_curves([])
    assert "no rows trained" in [text.get_text() for axis in figure.axes for text in axis.texts]


def test_epoch_ticks_are_whole_numbers_even_for_a_short_run():
    figure = report.training_curves([_row("two epochs", 2, [1e-4] * 2), _row("one epoch", 1, [1e-4])])
    figure.canvas.draw()
    for axis in _panels(figure):
        ticks = [tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
