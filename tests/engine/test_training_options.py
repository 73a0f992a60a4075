"""The options practitioners reach for on day one: class weights and a balanced sampler, early
stopping with the best epoch kept, and a log directory (CSV, TensorBoard when installed)."""

from __future__ import annotations

import csv
import math
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_task, pattern_domain, thumbnail_photos

import tlkit
from tlkit.cli import main
from tlkit.datasets import Domain, DomainPair
from tlkit.engine import class_balance
from tlkit.errors import ConfigError


def imbalanced_task(counts=(60, 6, 6, 6), *, seed: int = 0) -> DomainPair:
    """The tiny texture task with classes kept at ``counts`` labelled samples each."""
    source = pattern_domain(4 * max(counts) + 64, seed=seed, name="src")
    keep = torch.cat([(source.labels == c).nonzero().flatten()[:n] for c, n in enumerate(counts)])
    test = torch.cat([(source.labels == c).nonzero().flatten()[-16:] for c in range(4)])
    return DomainPair(source.subset(keep), source.subset(test), name="imbalanced")


class Recorder:
    """Observer: the labels, logits and logs of every step, the weights at each epoch's end."""

    def __init__(self) -> None:
        self.labels, self.logits, self.logs, self.weights = [], [], [], []

    @tlkit.hookimpl
    def tlkit_on_step_end(self, trainer, step, logs) -> None:
        self.labels.append(step.y.detach().cpu().clone())
        self.logits.append(step.logits.detach().float().cpu().clone())
        self.logs.append(dict(logs))

    @tlkit.hookimpl
    def tlkit_on_epoch_end(self, trainer, epoch, metrics) -> None:
        model = trainer.ema.module if trainer.ema is not None else trainer.model
        self.weights.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})


class Scripted:
    """Validator whose score of epoch ``e`` is ``values[e - 1]``: a monitor whose course the test
    decides, so early stopping can be checked epoch by epoch."""

    name = "scripted"
    family = "validator"
    scores = ("score_scripted",)

    def __init__(self, values=(0.5,)) -> None:
        self.values = [float(v) for v in values]

    @tlkit.hookimpl
    def tlkit_target_scores(self, trainer, logits):
        return {"score_scripted": self.values[trainer.state.epoch]}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def model_weights(run) -> dict:
    return {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}


# -- options are checked up front -------------------------------------------------------------
def test_options_are_converted_and_checked():
    cfg = tlkit.FitConfig(
        patience="3", restore_best="true", class_weight="balanced", sampler="balanced"
    )
    assert cfg.patience == 3 and cfg.restore_best is True
    assert cfg.class_weight == "balanced" and cfg.sampler == "balanced"
    assert tlkit.FitConfig(class_weight=[1, "2", 0.5]).class_weight == [1.0, 2.0, 0.5]
    assert tlkit.FitConfig(class_weight={"a": 2}).class_weight == {"a": 2.0}
    assert tlkit.FitConfig(class_weight="none").class_weight is None
    for bad, words in (
        (dict(patience=0), "patience"),
        (dict(restore_best="maybe"), "restore_best"),
        (dict(class_weight="balance"), "'balanced'"),
        (dict(class_weight=[1.0, -1.0]), "class_weight"),
        (dict(class_weight=[0.0, 0.0]), "class_weight"),
        (dict(sampler="even"), "'balanced'"),
        (dict(log_dir=3), "log_dir"),
    ):
        with pytest.raises(ConfigError, match=words):
            tlkit.FitConfig(**bad)


# -- class weights ----------------------------------------------------------------------------
def test_balanced_weights_are_inverse_class_frequency():
    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 2 + [-1] * 5)  # -1: unlabelled, not counted
    w = class_balance.balanced_weights(labels, 3)
    assert torch.allclose(w, torch.tensor([10 / 18, 10 / 6, 10 / 6]))


def test_class_weight_list_and_dict_by_name_or_index():
    task = imbalanced_task()
    w = class_balance.resolve_weights({"b": 3.0, 3: 0.5}, task.source, torch.device("cpu"))
    assert w.tolist() == [1.0, 3.0, 1.0, 0.5]
    with pytest.raises(ConfigError, match="'z'.*'a', 'b', 'c', 'd'"):
        class_balance.resolve_weights({"z": 2.0}, task.source, torch.device("cpu"))
    with pytest.raises(ConfigError, match="4 classes"):
        class_balance.resolve_weights([1.0, 2.0], task.source, torch.device("cpu"))


@pytest.mark.parametrize("loss", ["cross_entropy", "gce", "sce", "bootstrap_soft", "bootstrap_hard"])
def test_class_weight_weights_every_builtin_loss(fast, loss):
    """The logged supervised loss of each step is the class-weighted mean of the loss's own
    per-sample losses, sum(w_y * l) / sum(w_y) -- ``F.cross_entropy(weight=w)``'s convention."""
    task, rec = imbalanced_task(), Recorder()
    run = tlkit.fit(
        task, epochs=1, loss=loss, class_weight="balanced", log_every=1, observers=[rec], **fast
    )
    trainer_loss = tlkit.registry.get(loss, "loss").create()
    counts = torch.bincount(task.source.labels, minlength=4).float()
    w = counts.sum() / (4 * counts)
    assert len(rec.labels) == len(run.step_logs) > 1
    for y, logits, logs in zip(rec.labels, rec.logits, rec.logs, strict=True):
        if loss == "cross_entropy":
            expected = F.cross_entropy(logits, y, weight=w)
        else:
            per = trainer_loss.tlkit_supervised_loss(
                **_loss_args(trainer_loss, logits=logits, targets=y)
            )
            expected = (per * w[y]).sum() / w[y].sum()
        assert logs["supervised"] == pytest.approx(float(expected), rel=1e-4)
        plain = F.cross_entropy(logits, y) if loss == "cross_entropy" else None
        if plain is not None and len(y.unique()) > 1:
            assert logs["supervised"] != pytest.approx(float(plain), rel=1e-4)


def _loss_args(plugin, **available):
    """The arguments a loss's hook takes, of those a test can give (stateless losses)."""
    import inspect

    params = inspect.signature(plugin.tlkit_supervised_loss).parameters
    missing = [p for p in params if p not in available]
    assert not missing, f"{plugin.name} needs {missing}; give the test a way to pass them"
    return {p: available[p] for p in params}


def test_class_weight_is_refused_for_regression(fast):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (32, 1, 8, 8), dtype=torch.uint8, generator=g)
    dom = Domain(images, torch.rand(32), task="regression", name="r")
    for option in (dict(class_weight="balanced"), dict(sampler="balanced")):
        with pytest.raises(ConfigError, match="classification"):
            tlkit.fit(dom, epochs=1, **option, **fast)


# -- the balanced sampler ---------------------------------------------------------------------
def test_balanced_sampler_draws_classes_equally_in_memory(fast):
    task = imbalanced_task()
    shares = {}
    for sampler in ("shuffle", "balanced"):
        rec = Recorder()
        tlkit.fit(task, epochs=2, sampler=sampler, observers=[rec], **fast)
        seen = torch.cat(rec.labels)
        shares[sampler] = torch.bincount(seen, minlength=4).float() / len(seen)
    assert shares["shuffle"][0] > 0.7  # 60 of 78 labelled samples are class 0
    assert shares["balanced"].min() > 0.12 and shares["balanced"].max() < 0.38


def test_balanced_sampler_draws_classes_equally_from_files(fast, tmp_path):
    photos = thumbnail_photos(tmp_path / "photos", per_class=4)
    extra = thumbnail_photos(tmp_path / "more", per_class=24, seed=1)
    big = min(photos.classes)  # class 0 once sorted: 28 photos of it, 4 of each other
    firsts = [rel for rel, k in zip(extra.images, extra.labels) if extra.classes[k] == big]
    for i, rel in enumerate(firsts):
        extra.path(rel).rename(photos.root / big / f"extra{i}{Path(rel).suffix}")
    root = photos.root
    domain = tlkit.datasets.from_folder(root)
    assert not domain.in_memory
    counts = torch.bincount(domain.labels, minlength=4)
    assert counts[0] / counts[1:].min() > 5
    rec = Recorder()
    opts = {**fast, "batch_size": 8}
    with pytest.warns(UserWarning, match="class_weight"):  # the imbalance is named ...
        tlkit.fit(domain, epochs=1, image_size=32, num_workers=0, observers=[rec], **opts)
    plain = torch.cat(rec.labels)
    rec = Recorder()
    with warnings.catch_warnings(record=True) as caught:  # ... and not once it is handled
        warnings.simplefilter("always")
        tlkit.fit(
            domain,
            epochs=3,
            image_size=32,
            num_workers=0,
            sampler="balanced",
            observers=[rec],
            **opts,
        )
    assert not [w for w in caught if "sampler=" in str(w.message)]
    seen = torch.cat(rec.labels)
    share = torch.bincount(seen, minlength=4).float() / len(seen)
    assert (plain == 0).float().mean() > 0.6
    assert share.min() > 0.1 and share.max() < 0.45


def test_badly_imbalanced_classes_warn_naming_both_options(fast):
    task = imbalanced_task()
    with pytest.warns(UserWarning, match=r"class_weight='balanced'.*sampler='balanced'") as rec:
        tlkit.fit(task, epochs=1, max_steps=1, **fast)
    assert [w.filename for w in rec if "imbalanced" in str(w.message)] == [__file__]  # this line
    for handled in (dict(class_weight="balanced"), dict(sampler="balanced")):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*imbalanced.*")
            tlkit.fit(task, epochs=1, max_steps=1, **handled, **fast)
    with warnings.catch_warnings():  # a mild imbalance (3x) is no reason to warn
        warnings.filterwarnings("error", message=".*imbalanced.*")
        tlkit.fit(imbalanced_task((18, 6, 6, 6)), epochs=1, max_steps=1, **fast)
    with warnings.catch_warnings():  # nor a handful of labels, where any ratio is chance
        warnings.filterwarnings("error", message=".*imbalanced.*")
        tlkit.fit(imbalanced_task((9, 1, 1, 1)), epochs=1, max_steps=1, **fast)


# -- early stopping and the best epoch kept ---------------------------------------------------
SCORES = [0.1, 0.9, 0.2, 0.3, 0.95, 0.4, 0.4, 0.4]


def test_patience_stops_when_the_monitor_stops_improving(tiny_task, fast, temp_strategy, capsys):
    temp_strategy(Scripted)
    run = tlkit.fit(
        tiny_task,
        epochs=8,
        validate=("scripted", {"values": SCORES}),
        monitor="score_scripted",
        patience=2,
        **{**fast, "progress": True},
    )
    err = capsys.readouterr().err  # the progress line's last words say why it ended
    assert "after 4 epoch(s)" in err and f"({run.stop_reason})" in err
    # best at epoch 2; epochs 3 and 4 do not beat it (0.3 < 0.9): stop after epoch 4
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4]
    assert run.stopped_early
    assert "score_scripted" in run.stop_reason and "2 epochs" in run.stop_reason
    assert "epoch 2" in run.stop_reason
    assert "patience" in repr(run)
    longer = tlkit.fit(
        tiny_task,
        epochs=8,
        validate=("scripted", {"values": SCORES}),
        monitor="score_scripted",
        patience=3,
        **fast,
    )
    assert len(longer.history) == 8 and longer.best["epoch"] == 5  # 0.95 came in time
    assert not longer.stopped_early and longer.stop_reason is None


def test_restore_best_returns_the_best_epochs_weights(tiny_task, fast, temp_strategy):
    temp_strategy(Scripted)
    rec = Recorder()
    run = tlkit.fit(
        tiny_task,
        epochs=4,
        validate=("scripted", {"values": SCORES}),
        monitor="score_scripted",
        restore_best=True,
        observers=[rec],
        **fast,
    )
    assert len(run.history) == 4 and run.best["epoch"] == 2
    assert same_weights(model_weights(run), rec.weights[1])
    assert not same_weights(model_weights(run), rec.weights[-1])
    assert run.restored_from == {"epoch": 2, "metric": "score_scripted", "value": 0.9}
    assert "epoch 2" in repr(run) and "score_scripted" in repr(run)
    last = tlkit.fit(
        tiny_task,
        epochs=4,
        validate=("scripted", {"values": SCORES}),
        monitor="score_scripted",
        **fast,
    )
    assert same_weights(model_weights(last), rec.weights[-1]) and last.restored_from is None


def test_restore_best_with_ema_and_a_real_metric(fast):
    """On a task without a target, ``monitor="auto"`` is the source test accuracy, and the
    returned (EMA) model measures what its history row says."""
    tiny = make_tiny_task()
    task = DomainPair(tiny.source, tiny.source_test, name="plain")
    run = tlkit.fit(
        task,
        epochs=4,
        mode="full",
        lr=0.05,
        ema=0.5,
        restore_best=True,
        **{k: v for k, v in fast.items() if k != "lr"},
    )
    best = run.best["epoch"]
    assert run.restored_from["metric"] == "source_accuracy"
    measured = run.evaluate(task)["source"]["accuracy"]
    assert measured == pytest.approx(run.history[best - 1]["source_accuracy"], abs=1e-6)


def test_stopping_options_refuse_auto_monitor_without_labelled_target(tiny_task, fast):
    """An adaptation run: ``monitor="auto"`` would keep the epoch of the best *source* accuracy.
    The user must name the monitor; named, it is accepted."""
    for option in (dict(patience=2), dict(restore_best=True)):
        with pytest.raises(ConfigError, match=r"monitor=.*score_.*source_accuracy") as info:
            tlkit.fit(tiny_task, epochs=2, **option, **fast)
        assert next(iter(option)) in str(info.value)
    run = tlkit.fit(tiny_task, epochs=2, patience=1, monitor="source_accuracy", **fast)
    assert run.best["metric"] == "source_accuracy"
    semi = tlkit.datasets.few_labels(DomainPair(tiny_task.source, tiny_task.source_test), 4)
    tlkit.fit(semi, epochs=1, restore_best=True, **fast)  # one domain: its test set is its own


def test_a_validator_never_becomes_the_monitor_by_itself(tiny_task, fast):
    run = tlkit.fit(tiny_task, epochs=1, validate="entropy", **fast)
    assert "score_entropy" in run.history[-1]
    assert run.best["metric"] == "source_accuracy"


def test_early_stopping_resumes_exactly(tiny_task, fast, temp_strategy, tmp_path):
    """Killed in epoch 4 (patience counter at 2, best weights of epoch 2 only in memory) and
    resumed: the same epochs, the same stop, the same kept weights, the same log file."""
    temp_strategy(Scripted)
    opts = dict(
        epochs=8,
        validate=("scripted", {"values": SCORES}),
        monitor="score_scripted",
        patience=3,
        restore_best=True,
        log_every=2,
        **fast,
    )
    values = [0.1, 0.9, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    opts["validate"] = ("scripted", {"values": values})
    whole = tlkit.fit(tiny_task, log_dir=str(tmp_path / "whole"), **opts)
    assert len(whole.history) == 5 and whole.restored_from["epoch"] == 2
    ckpt, logs = str(tmp_path / "ckpt"), str(tmp_path / "logs")
    first = tlkit.fit(tiny_task, checkpoint_dir=ckpt, log_dir=logs, max_steps=20, **opts)
    assert first.stopped_early and len(first.history) == 3
    again = tlkit.fit(tiny_task, checkpoint_dir=ckpt, log_dir=logs, resume=True, **opts)
    assert again.history == whole.history
    assert same_weights(model_weights(again), model_weights(whole))
    assert again.stop_reason == whole.stop_reason and again.restored_from == whole.restored_from
    whole_csv = (tmp_path / "whole" / "metrics.csv").read_text()
    assert (tmp_path / "logs" / "metrics.csv").read_text() == whole_csv
    done = tlkit.fit(tiny_task, checkpoint_dir=ckpt, resume=True, **opts)  # a stopped run stays
    assert done.history == whole.history and same_weights(model_weights(done), model_weights(whole))


# -- the log directory ------------------------------------------------------------------------
def read_csv(path):
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    rows = list(csv.DictReader(lines))
    return lines[0].split(","), rows


def test_log_dir_writes_a_csv_of_every_logged_value(tiny_task, fast, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    run = tlkit.fit(
        tiny_task,
        epochs=2,
        validate="entropy",
        monitor="score_entropy",
        log_every=4,
        log_dir=tmp_path / "logs",
        **fast,
    )
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["metrics.csv"]
    header, rows = read_csv(tmp_path / "logs" / "metrics.csv")
    assert header[:3] == ["kind", "epoch", "step"] and len(set(header)) == len(header)
    epochs = [r for r in rows if r["kind"] == "epoch"]
    steps = [r for r in rows if r["kind"] == "step"]
    assert len(epochs) == len(run.history) and len(steps) == len(run.step_logs)
    for row, logged in zip(epochs, run.history, strict=True):
        for key, value in logged.items():
            assert float(row[key]) == value, key
    for row, logged in zip(steps, run.step_logs, strict=True):
        for key, value in logged.items():
            assert float(row[key]) == value, key
    assert all(r["lr"] for r in steps if int(r["step"]) % 4 == 0)  # every logged value
    assert [int(r["step"]) for r in rows] == sorted(int(r["step"]) for r in rows)


def test_log_dir_writes_tensorboard_scalars_when_it_is_installed(
    tiny_task, fast, tmp_path, monkeypatch
):
    written, closed = [], []

    class SummaryWriter:
        def __init__(self, log_dir, purge_step=None):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, global_step):
            written.append((tag, value, global_step))

        def flush(self):
            pass

        def close(self):
            closed.append(self.log_dir)

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    run = tlkit.fit(tiny_task, epochs=2, log_dir=str(tmp_path), **fast)
    assert closed == [str(tmp_path)]
    for row in run.history:
        assert ("epoch/source_accuracy", row["source_accuracy"], row["step"]) in written
    logged = [(t, s) for t, _, s in written if t == "step/loss"]
    assert logged == [("step/loss", r["step"]) for r in run.step_logs]
    assert all(math.isfinite(v) for _, v, _ in written)


# -- the command line -------------------------------------------------------------------------
def test_cli_passes_the_options_through_set(tmp_path, capsys):
    logs = tmp_path / "logs"
    code = main(
        [
            "fit",
            "--data",
            "digits",
            "--backbone",
            "small_cnn",
            "--epochs",
            "1",
            "--set",
            "mode=full",
            "--set",
            "progress=false",
            "--set",
            "patience=3",
            "--set",
            "restore_best=true",
            "--set",
            "class_weight=balanced",
            "--set",
            "sampler=balanced",
            "--set",
            f"log_dir={logs}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    header, rows = read_csv(logs / "metrics.csv")
    assert "loss" in header and rows
