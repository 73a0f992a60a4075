"""The dashboard's form judged by the rules fit() and the CLI use, its day-one fields, the ETA,
and where an export goes."""

from __future__ import annotations

import contextlib
import io
from html import escape
from pathlib import Path

import pytest
import yaml

import tlkit
from tlkit.cli import main as cli_main
from tlkit.engine.config import ConfigError
from tlkit.notebook.dashboard import Dashboard
from tlkit.notebook.dashboard_progress import Eta, RunObserver


@pytest.fixture
def dash(tiny_task, tmp_path):
    d = Dashboard(
        data={"tiny": tiny_task},
        epochs=1,
        batch_size=16,
        lr=3e-3,
        checkpoint_root=tmp_path / "runs",
        redraw_interval=0.0,
    )
    yield d
    d.stop()
    d.wait(60)


def test_text_in_a_number_field_is_an_error_naming_the_field(dash):
    dash.lr.value = "abc"
    dash.train_button.click()
    assert not dash.running and dash.runs == []
    assert "lr=&#x27;abc&#x27; is not valid" in dash.error.value
    assert dash.lr.value == "abc"  # what was typed stays, to be corrected
    dash.lr.value = "3e-3"  # scientific notation is read as a number
    dash.epochs.value = 1  # a number set from code is shown as text
    assert dash.options()["lr"] == 0.003 and dash.options()["epochs"] == 1


def _api_message(task, key, value) -> str:
    with pytest.raises(ConfigError) as err:
        tlkit.fit(task, "small_cnn", **{"epochs": 1, "progress": False, key: value})
    return str(err.value)


def _cli_message(args: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli_main(args) == 2
    line = err.getvalue().strip().splitlines()[-1]
    assert line.startswith("tlkit: error: ")
    return line.removeprefix("tlkit: error: ")


@pytest.mark.parametrize(
    "key, text",
    [("lr", "abc"), ("epochs", "0"), ("patience", "0"), ("batch_size", "-3"), ("seed", "-1")],
)
def test_a_bad_value_gets_one_message_from_api_cli_and_form(dash, tiny_task, key, text):
    value = yaml.safe_load(text)  # what --set passes on
    from_api = _api_message(tiny_task, key, value)
    cli = ["fit", "--data", "digits", "--backbone", "small_cnn", "--epochs", "1"]
    from_cli = _cli_message([*cli, "--set", f"{key}={text}"])
    getattr(dash, key).value = text
    dash.train_button.click()
    assert key in from_api and from_api == from_cli
    assert f"<b>ConfigError:</b> {escape(from_api)}</div>" in dash.error.value


@pytest.mark.parametrize("name", ["learning_rate", "patince"])
def test_an_unknown_option_gets_one_message_from_api_cli_and_dashboard(tiny_task, name):
    from_api = _api_message(tiny_task, name, 1)
    cli = ["fit", "--data", "digits", "--backbone", "small_cnn", "--epochs", "1"]
    from_cli = _cli_message([*cli, "--set", f"{name}=1"])
    with pytest.raises(ConfigError) as err:
        Dashboard(data={"tiny": tiny_task}, **{name: 1})
    with pytest.raises(ConfigError) as saved:
        tlkit.FitConfig.from_dict({name: 1})  # a config file read back
    assert from_api == from_cli == str(err.value) == str(saved.value)
    assert f"['{name}']" in from_api
    if name == "patince":  # a near miss names the option meant
        assert "did you mean 'patience' for 'patince'?" in from_api


def test_the_target_rule_is_the_engines_with_the_forms_advice(tiny_task, tmp_path):
    single = tlkit.datasets.DomainPair(tiny_task.source, tiny_task.source_test, name="src")
    with pytest.raises(ConfigError) as err:
        tlkit.fit(single, "small_cnn", epochs=1, adapt="dann", progress=False)
    dash = Dashboard(data={"src": single}, epochs=1, adapt=("dann",), checkpoint_root=tmp_path)
    dash.train_button.click()
    rule = str(err.value).split(". ")[0]  # the rule's statement, before the advice
    assert rule == "adapt='dann' learns from unlabelled target data, but task 'src' has no target"
    assert escape(rule) in dash.error.value and "untick" in dash.error.value


def test_day_one_options_are_fields_that_reach_the_run(dash, tmp_path):
    for name in ("patience", "restore_best", "class_weight", "sampler", "log_dir"):
        assert getattr(dash, name).description == name
    assert dash.options()["patience"] is None and dash.options()["class_weight"] is None
    assert dash.options()["sampler"] == "shuffle"  # fit's default
    dash.epochs.value = 3
    dash.patience.value = "1"
    dash.restore_best.value = True
    dash.class_weight.value = "balanced"
    dash.sampler.value = "balanced"
    dash.log_dir.value = str(tmp_path / "logs")
    assert dash.train() is None  # the engine's rule: an adaptation run names its monitor
    assert "Name the monitor" in dash.error.value and "monitor=&#x27;auto&#x27;" in dash.error.value
    dash.monitor.value = "source_accuracy"
    record = dash.train()
    run = dash.wait(60)
    assert dash.error.value == "", dash.error.value
    options = record.options
    assert options["patience"] == 1 and options["restore_best"] is True
    assert options["class_weight"] == "balanced" and options["sampler"] == "balanced"
    assert run.config.patience == 1 and run.config.class_weight == "balanced"
    assert run.config.sampler == "balanced"
    assert run.restored_from is not None  # restore_best kept the monitor's best epoch
    best = run.best
    assert f"best epoch {best['epoch']} by source_accuracy" in dash.status.value  # says which
    assert (tmp_path / "logs" / "run-1" / "metrics.csv").is_file()  # a folder per run
    dash.patience.value = ""
    assert dash.options()["patience"] is None  # empty: not set


def test_lr_find_is_accepted_where_fit_accepts_it(dash):
    dash.lr.value = "find"
    assert dash.options()["lr"] == "find"
    assert tlkit.FitConfig(lr=dash.options()["lr"]).lr == "find"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_first_eta_waits_for_the_pace_after_warm_up():
    clock = FakeClock()
    eta = Eta(100, clock=clock)
    eta.start(0)
    clock.now = 10.0  # the first step: workers starting, caches filling
    eta.observe(1)
    assert eta.remaining() is None  # one slow step says nothing about the next 99
    for step in range(2, 12):
        clock.now += 0.1
        eta.observe(step)
    assert eta.remaining() == pytest.approx(0.1 * (100 - 11))
    # the first step alone would have estimated 10 s x 99 steps
    assert eta.remaining() < 10.0


def test_the_progress_line_shows_no_eta_from_the_first_step():
    import ipywidgets as w

    class State:
        step, total_steps, epoch, stopped_early = 0, 50, 0, False

    class FakeTrainer:
        state = State()

    clock = FakeClock()
    bar, text = w.IntProgress(), w.HTML()
    obs = RunObserver(
        None, bar, text, on_status=lambda *a: None, on_epoch=print, on_end=print, clock=clock
    )
    trainer = FakeTrainer()
    obs.tlkit_on_fit_start(trainer)
    texts = []
    for step in range(1, 12):
        clock.now += 5.0 if step == 1 else 0.5
        trainer.state.step = step
        obs.tlkit_on_step_end(trainer, {})
        texts.append(text.value)
    assert "ETA" not in texts[0] and "ETA" not in texts[2]
    assert texts[-1].endswith("ETA 0:20")  # 39 steps left at 0.5 s


def test_export_goes_beside_the_notebook_with_the_grid(dash, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dash.train()
    dash.wait(60)
    dash.adapt.value = ("fda",)
    dash.train()
    dash.wait(60)
    assert dash.error.value == "", dash.error.value
    written = dash.export()
    out = dash.last_export
    assert out.parent == tmp_path and all(Path(p).parent == out for p in written)
    assert escape(str(out)) in dash.status.value
    names = {Path(p).name for p in written}
    assert "run-2-source_to_target.png" in names and "run-1-source_to_target.png" not in names
    assert (out / "run-2-source_to_target.png").read_bytes() == dash.translations.png
    again = dash.export()  # a second export never overwrites the first
    assert dash.last_export != out and len(again) == len(written)


def test_the_form_folds_while_training(dash):
    assert dash.form.section.selected_index == 0  # open before a run
    dash.train()
    assert dash.form.section.selected_index is None  # folded: the curves fit the screen
    assert "small_cnn" in dash.form.section.get_title(0)
    dash.wait(60)


def test_lr_find_sweeps_before_the_run_and_shows_its_pick(dash, tmp_path, monkeypatch):
    import threading

    import tlkit.api

    monkeypatch.chdir(tmp_path)
    swept_in, real = [], tlkit.api.find_lr

    def recording(*args, **kwargs):
        swept_in.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(tlkit.api, "find_lr", recording)
    assert dash.lr_finder.png == b""  # nothing below the curves before a sweep
    dash.lr.value = "find"
    record = dash.train()
    run = dash.wait(60)
    assert dash.error.value == "", dash.error.value
    assert swept_in == [dash._thread]  # in the training thread: the Train click never waits
    picked = run.config.lr
    assert isinstance(picked, float) and f"lr={picked:.2g}" in record.extra["lr_finder"]
    assert dash.lr_finder.png.startswith(b"\x89PNG")
    assert "lr_finder.png" in {p.name for p in dash.export()}
