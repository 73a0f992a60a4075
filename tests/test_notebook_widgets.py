"""The training dashboard driven without a browser: clicks and trait changes in plain pytest.

ipywidgets objects work without a front end (``button.click()`` runs the handlers), so these
tests exercise exactly the code a person's clicks run: Train finishes a run, Stop ends one early
and keeps ``best.pt``, registered strategies show up in the form, and bad options end up as a
message in the widget rather than a traceback.
"""

from __future__ import annotations

import time

import pytest
import torch

import tlkit
from tlkit.engine.config import ConfigError
from tlkit.notebook import live
from tlkit.notebook.dashboard import Dashboard, comparison_html


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the training thread and pytest share two (often busy) cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def dash(tiny_task, tmp_path):
    d = Dashboard(
        data={"tiny": tiny_task},
        epochs=2,
        batch_size=16,
        lr=3e-3,
        checkpoint_root=tmp_path,
        redraw_interval=0.0,
    )
    yield d
    d.stop()
    d.wait(60)


class Shout:
    """A do-nothing adaptation strategy registered by a test."""

    name = "shout_adapt"
    family = "adapt"
    needs_target = True

    @tlkit.hookimpl
    def tlkit_extra_losses(self):
        return None


class Broken:
    """A loss that fails inside its hook (a bug in someone's plugin)."""

    name = "broken_loss"
    family = "loss"
    requires_task = "classification"

    @tlkit.hookimpl
    def tlkit_supervised_loss(self, logits, targets):
        raise RuntimeError("boom")


def is_png(image) -> bool:
    return bytes(image.value).startswith(b"\x89PNG")


def wait_until(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_form_offers_the_registered_strategies(dash, temp_strategy):
    assert "tiny" in dash.dataset.options and dash.dataset.value == "tiny"
    assert "cross_entropy" in dash.loss.options
    assert "small_cnn" in dash.backbone.options
    assert "shout_adapt" not in dash.adapt.options
    temp_strategy(Shout)
    temp_strategy(Broken)
    dash.adapt.value = ()
    dash.refresh_button.click()
    assert "shout_adapt" in dash.adapt.options
    assert "broken_loss" in dash.loss.options
    # ...and a dashboard built afterwards lists them from the start
    fresh = Dashboard(data={"tiny": dash.data["tiny"]}, adapt=("shout_adapt",))
    assert fresh.adapt.value == ("shout_adapt",)


def test_initial_values_must_be_offered(tiny_task):
    with pytest.raises(ConfigError, match="dataset=.*nosuch"):
        Dashboard(dataset="nosuch")
    with pytest.raises(ConfigError, match="adapt=.*no_such_method"):
        Dashboard(data={"tiny": tiny_task}, adapt=("no_such_method",))
    with pytest.raises(ConfigError, match="unknown options"):
        Dashboard(data={"tiny": tiny_task}, learning_rate=1.0)
    dash = Dashboard(data={"tiny": tiny_task}, backbone="timm:resnet10t")
    assert (
        dash.backbone.value == "timm:resnet10t" and dash.options()["backbone"] == "timm:resnet10t"
    )


def test_train_completes_a_run_with_live_figures(dash):
    dash.train_button.click()
    assert dash.stop_button.disabled is False and dash.train_button.disabled is True
    run = dash.wait(60)
    assert dash.error.value == "", dash.error.value
    assert run is not None and len(run.history) == 2 and not run.stopped_early
    assert dash.progress.value == dash.progress.max == run.history[-1]["step"]
    assert is_png(dash.curves) and is_png(dash.confusion)
    assert "done" in dash.status.value and dash.runs[0].best_checkpoint is not None
    assert dash.train_button.disabled is False and dash.stop_button.disabled is True
    # a second run with a strategy; both appear in the comparison
    dash.adapt.value = ("coral",) if "coral" in dash.adapt.options else ()
    dash.epochs.value = 1
    dash.train_button.click()
    dash.wait(60)
    assert len(dash.runs) == 2 and all(r.run is not None for r in dash.runs)
    assert dash.compare_table.value.count("<tr>") == 3  # header + two runs
    assert is_png(dash.compare_plot)
    dash.embedding_method.value = "pca"
    dash.embedding_button.click()
    assert dash.error.value == "" and is_png(dash.embedding)


def test_stop_ends_early_and_keeps_best_checkpoint(dash):
    dash.epochs.value = 200
    record = dash.train()
    wait_until(lambda: dash._trainer is not None and len(dash._trainer.history) >= 1)
    dash.stop_button.click()
    run = dash.wait(60)
    assert not dash.running
    assert run.stopped_early and 1 <= len(run.history) < 200
    assert "stopped" in dash.status.value
    best = record.best_checkpoint
    assert best is not None and (record.checkpoint_dir / "last.pt").exists()
    reloaded = tlkit.load(best)
    assert reloaded.best["epoch"] <= len(run.history)


@pytest.mark.parametrize(
    "field, value, words",
    [("lr", -1.0, "lr=-1"), ("epochs", 0, "epochs=0"), ("image_size", 3, "image_size=3")],
)
def test_bad_hyper_parameters_show_an_error_not_a_traceback(dash, field, value, words):
    getattr(dash, field).value = value
    dash.train_button.click()  # must not raise
    assert not dash.running and dash.runs == []
    assert "ConfigError" in dash.error.value and words in dash.error.value
    assert "Traceback" not in dash.error.value


def test_impossible_combination_and_failing_plugin_show_errors(tiny_task, tmp_path, temp_strategy):
    source_only = tlkit.datasets.DomainPair(tiny_task.source, tiny_task.source_test, name="src")
    dash = Dashboard(data={"src": source_only}, epochs=1, batch_size=16, checkpoint_root=tmp_path)
    dash.adapt.value = ("coral",) if "coral" in dash.adapt.options else ()
    if dash.adapt.value:
        dash.train_button.click()
        assert "no target" in dash.error.value and dash.runs == []
    temp_strategy(Broken)
    dash.refresh()
    dash.adapt.value = ()
    dash.loss.value = "broken_loss"
    dash.train_button.click()
    dash.wait(60)
    assert "PluginError" in dash.error.value and "boom" in dash.error.value
    assert "failed" in dash.status.value and "failed" in comparison_html(dash.runs)
    dash.loss.value = "auto"
    dash.train_button.click()  # the dashboard is usable again and clears the message
    dash.wait(60)
    assert dash.error.value == "" and dash.runs[-1].run is not None


def test_live_curves_split_loss_terms_from_rates():
    logs = [{"step": 10, "epoch": 1, "loss": 1.0, "dann": 0.5, "domain_accuracy": 0.7}]
    logs.append({"step": 20, "epoch": 1, "loss": 0.8, "mask_rate": 0.3, "lr": 1e-3})
    losses, rates = live.split_scalars(logs)
    assert losses == ["loss", "dann"] and rates == ["domain_accuracy", "mask_rate"]
    history = [{"epoch": 1, "train_loss": 1.0, "source_accuracy": 0.5, "target_accuracy": 0.4}]
    assert live.held_out_keys(history) == ["source_accuracy", "target_accuracy"]
    fig = live.draw_training(live.new_figure(), logs, history)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3 and len(fig.axes[2].lines) == 2 and len(fig.axes[1].lines) == 2
    assert live.figure_png(fig).startswith(b"\x89PNG")
