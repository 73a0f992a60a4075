"""The training dashboard driven without a browser: clicks and trait changes in plain pytest.

ipywidgets objects work without a front end (``button.click()`` runs the handlers), so these
tests exercise exactly the code a person's clicks run: Train finishes a run, Stop ends one early
and keeps ``best.pt``, registered strategies show up in the form, and bad options end up as a
message in the widget rather than a traceback.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import torch

import tlkit
from tlkit.engine.config import ConfigError, FitConfig
from tlkit.notebook import live
from tlkit.notebook.dashboard import CheckList, Dashboard, comparison_html, png_size, progress_text


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
    with pytest.raises(ConfigError, match=r"unknown fit\(\) options \['learning_rate'\]"):
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


# -- what makes a class go well -----------------------------------------------------------------
def widget_tree(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from widget_tree(child)


def test_form_starts_from_fits_defaults_and_uses_checkboxes(dash):
    assert dash.mode.value == "auto" == FitConfig().mode  # the dashboard trains like fit()
    assert dash.options()["monitor"] == "auto" and dash.options()["validate"] is None
    names = {type(w).__name__ for w in widget_tree(dash.widget)}
    assert "SelectMultiple" not in names  # Ctrl-click to deselect is not a student's reflex
    assert isinstance(dash.adapt, CheckList) and isinstance(dash.validate, CheckList)
    coral = dash.adapt.boxes["coral"]
    coral.value = True  # one click ticks...
    assert dash.adapt.value == ("coral",) and dash.options()["adapt"] == ["coral"]
    coral.value = False  # ...one click unticks
    assert dash.adapt.value == () and dash.options()["adapt"] is None
    # every field is described by the fit() option it sets, so errors name a field
    for name in (
        "dataset",
        "backbone",
        "loss",
        "pseudo_label",
        "mode",
        "monitor",
        "epochs",
        "lr",
        "batch_size",
        "image_size",
        "seed",
    ):
        assert getattr(dash, name).description == name


def test_validate_and_monitor_pick_the_best_epoch_of_an_adaptation_run(dash):
    assert {"entropy", "info_max", "snd"} <= set(dash.validate.options)
    assert "score_info_max" not in dash.monitor.options
    dash.adapt.value = ("coral",)
    dash.validate.value = ("info_max",)
    # ticking a validator offers its score, and never selects it by itself: the user picks
    assert "score_info_max" in dash.monitor.options and dash.monitor.value == "auto"
    dash.monitor.value = "score_info_max"
    dash.validate.value = ()
    assert dash.monitor.value == "auto"  # a score that is no longer offered falls back to auto
    dash.validate.value = ("info_max",)
    dash.monitor.value = "source_accuracy"
    dash.validate.value = ("info_max", "entropy")
    assert dash.monitor.value == "source_accuracy"  # a choice the user made is kept
    dash.monitor.value = "score_entropy"
    dash.epochs.value = 2
    record = dash.train()
    run = dash.wait(60)
    assert dash.error.value == "", dash.error.value
    assert sorted(record.options["validate"]) == ["entropy", "info_max"]
    assert run.best["metric"] == "score_entropy" and "score_info_max" in run.last
    dash.validate.value = ()
    dash.monitor.value = "auto"
    dash.monitor.options = [*dash.monitor.options, "score_snd"]
    dash.monitor.value = "score_snd"
    dash.train_button.click()
    # the engine's rule, as fit() gives it: the metric is not one of this run's
    assert "monitor=&#x27;score_snd&#x27; is not a metric of this run" in dash.error.value
    assert "validate" in dash.error.value and dash.runs[-1].options["monitor"] == "score_entropy"


def test_errors_speak_the_forms_language(tiny_task, tmp_path):
    single = tlkit.datasets.DomainPair(tiny_task.source, tiny_task.source_test, name="src")
    dash = Dashboard(data={"src only": single}, epochs=1, batch_size=16, checkpoint_root=tmp_path)
    dash.adapt.value = ("dann",)
    dash.train_button.click()
    message = dash.error.value
    assert "adapt=&#x27;dann&#x27; learns" in message and "src only" in message  # field + choice
    assert "dataset" in message and "untick" in message
    assert "tlkit.datasets" not in message  # no code advice in a form
    assert dash.runs == []


def test_before_a_run_hints_not_broken_images(dash):
    for area in (dash.curves, dash.confusion, dash.embedding, dash.compare_plot, dash.translations):
        # an empty Image widget renders as a broken <img> in a saved notebook even when hidden:
        # it joins the area only with its first figure
        assert area.image not in area.widget.children and area.hint.value
    assert "Refresh embedding" == dash.embedding_button.description
    assert dash.embedding_button.layout.width == "auto"  # not cut to "Refresh embe..."
    assert "kept" in dash.runs_note.value  # a folder given by the user is kept


def test_run_shows_progress_numbers_final_metrics_and_natural_size_images(dash, monkeypatch):
    def no_second_evaluation(*args, **kwargs):
        raise AssertionError("the confusion matrix must come from trainer.eval_results")

    # a second evaluation would go through Run.evaluate -> tlkit.run.evaluate_model
    monkeypatch.setattr(tlkit.run, "evaluate_model", no_second_evaluation)
    record = dash.train()
    run = dash.wait(60)
    assert dash.error.value == "", dash.error.value
    total = run.history[-1]["step"]
    assert f"step {total}/{total}" in dash.progress_text.value
    assert "elapsed" in dash.progress_text.value
    status = dash.status.value
    assert status.startswith("run #1 done") and f"{run.last['target_accuracy']:.4f}" in status
    assert str(record.checkpoint_dir) not in status  # the folder is in the table, not here
    assert str(record.checkpoint_dir) in dash.compare_table.value
    for area in (dash.curves, dash.confusion):
        width, height = png_size(area.png)
        assert area.image.width == str(width) and area.image.height == str(height)
        assert area.image.layout.max_width == "100%" and area.hint.layout.display == "none"
        assert area.image in area.widget.children
    assert len(record.epoch_seconds) == len(run.history) == 2


def test_progress_text_has_an_eta():
    assert progress_text(30, 120, 15.0, eta=45.0) == "step 30/120 · 0:15 elapsed · ETA 0:45"
    assert progress_text(120, 120, 61.0, eta=0.0) == "step 120/120 · 1:01 elapsed"
    assert "ETA" not in progress_text(3, 120, 2.0)  # no estimate yet


def test_epoch_table_is_an_output_that_stays_in_the_notebook(dash):
    from IPython.testing.globalipapp import get_ipython
    from IPython.utils.capture import capture_output

    shell = get_ipython()  # starts the test shell once per process
    types = shell.display_formatter.active_types
    shell.display_formatter.active_types = [*types, "text/html"]  # as in a notebook
    try:
        with capture_output() as shown:
            dash._ipython_display_()
        with capture_output() as updates:
            dash.train()
            run = dash.wait(60)
    finally:
        shell.display_formatter.active_types = types
    kinds = [set(o.data) for o in shown.outputs]
    assert "application/vnd.jupyter.widget-view+json" in kinds[0]
    table = shown.outputs[1]
    assert "text/html" in table.data and table.transient.get("display_id")
    assert "once a run is trained" in table.data["text/html"]
    html = [o for o in updates.outputs if o.update][-1]
    assert html.transient["display_id"] == table.transient["display_id"]
    text = html.data["text/html"]
    assert text.count("<tr>") == 1 + len(run.history)  # header + one row per epoch
    for key in ("epoch", "train_loss", "source_accuracy", "target_accuracy", "time"):
        assert f"<th>{key}</th>" in text
    assert f"{run.history[-1]['source_accuracy']:.4f}" in text


def test_compare_tab_exports_csv_and_png(dash, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the notebook's working directory
    with pytest.raises(RuntimeError, match="nothing to export"):
        dash.export(tmp_path / "early")
    dash.epochs.value = 1
    dash.train()
    dash.wait(60)
    dash.adapt.value = ("coral",)
    dash.train()
    dash.wait(60)
    html = dash.compare_table.value
    assert "border" in html and "white-space:nowrap" in html
    dash.export_button.click()
    assert dash.error.value == "", dash.error.value
    out = dash.last_export
    assert out.parent == tmp_path and out.name.startswith("tlkit-export-")  # beside the notebook
    assert str(out) in dash.status.value  # the status line says where
    assert "histories.csv" in dash.export_note.value
    rows = list(csv.DictReader((out / "histories.csv").open()))
    assert [r["run"] for r in rows] == ["1", "2"] and "coral" in rows[1]["label"]
    assert float(rows[0]["source_accuracy"]) == dash.runs[0].run.history[0]["source_accuracy"]
    for name in ("comparison.png", "curves.png", "confusion.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name


def test_runs_folder_is_shown_chosen_and_not_left_behind(tiny_task, tmp_path):
    dash = Dashboard(data={"tiny": tiny_task}, epochs=1, batch_size=16)
    temp = Path(dash.runs_folder.value)
    assert temp.is_dir() and "temporary" in dash.runs_note.value
    dash.runs_folder.value = str(tmp_path / "keep")
    assert "kept" in dash.runs_note.value
    record = dash.train()
    dash.wait(60)
    assert record.checkpoint_dir == tmp_path / "keep" / "run-1" and record.best_checkpoint
    dash.close()
    assert not temp.exists() and record.best_checkpoint.exists()


def test_curves_use_a_real_epoch_axis_and_hide_empty_panels():
    history = [{"epoch": 1, "step": 5, "train_loss": 1.0, "source_accuracy": 0.5}]
    logs = [{"step": 5, "epoch": 1, "loss": 1.0}]
    fig = live.draw_training(live.new_figure(), logs, history, epochs=5)
    assert len(fig.axes) == 2  # no empty "rates" panel without a rate
    lo, hi = fig.axes[1].get_xlim()
    assert lo < 1 and hi >= 5  # one epoch is a point on an axis up to the planned 5
    assert all(float(t).is_integer() for t in fig.axes[1].get_xticks())
    logs.append({"step": 10, "epoch": 1, "loss": 0.8, "mask_rate": 0.4})
    fig = live.draw_training(live.new_figure(), logs, history, epochs=5)
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "rates logged by strategies"


def test_confusion_matrix_shows_counts_and_accuracy():
    cm = torch.tensor([[8, 2], [1, 9]])
    fig = live.draw_confusion(live.new_figure(4, 4), cm, ("cat", "dog"), "target test set")
    ax = fig.axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["1", "2", "8", "9"]
    assert ax.get_title() == "target test set: accuracy 85.0% of 20"
    assert ax.get_xticklabels()[0].get_fontsize() >= 9


def test_epoch_axis_reaches_the_plan_or_twice_the_epochs_done():
    assert live.shown_epochs(1, 5) == 5  # a short run grows into its axis
    assert live.shown_epochs(1, 300) == 10  # a long one is not a dot against the y axis
    assert live.shown_epochs(40, 300) == 80 and live.shown_epochs(290, 300) == 300
    assert live.shown_epochs(3, None) == 3


def test_pixel_level_runs_show_source_and_target_style_images(dash):
    assert "target-style" in dash.translations.hint.value  # a hint before any run
    dash.adapt.value = ("fda",)
    dash.epochs.value = 1
    dash.train_button.click()
    dash.wait(60)
    assert dash.error.value == "", dash.error.value
    assert is_png(dash.translations)  # source, FDA-translated and target rows
