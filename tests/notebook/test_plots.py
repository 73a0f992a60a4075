"""Run.plot / Run.plot_confusion_matrix figures: readable at one epoch, counts in the cells."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from tlkit.plots import plot_confusion_matrix, plot_history  # noqa: E402


def test_one_epoch_history_sits_on_a_whole_epoch_axis():
    fig = plot_history([{"epoch": 1, "train_loss": 0.7, "source_accuracy": 0.8}])
    try:
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            assert lo <= 0.5 and hi >= 1.5  # not 0.96..1.04 around a lone dot
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert all(float(t).is_integer() for t in ticks)
    finally:
        plt.close(fig)


def test_confusion_matrix_has_counts_and_accuracy():
    fig = plot_confusion_matrix(torch.tensor([[3, 1], [0, 4]]), ["a", "b"], title="test")
    try:
        ax = fig.axes[0]
        assert sorted(t.get_text() for t in ax.texts) == ["1", "3", "4"]
        assert ax.get_title() == "test: accuracy 87.5% of 8"
    finally:
        plt.close(fig)
