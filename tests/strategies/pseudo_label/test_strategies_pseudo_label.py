"""Pseudo-labelling strategies: hand-computed cores, a spy on FixMatch's views, training runs."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from tlkit_strategies.pseudo_label.fixmatch import FixMatch
from tlkit_strategies.pseudo_label.mean_teacher import (
    MeanTeacher,
    ema_decay,
    sigmoid_rampup,
    softmax_mse,
)
from tlkit_strategies.pseudo_label.threshold import ConfidenceThreshold

import tlkit

NAMES = ("threshold", "fixmatch", "mean_teacher")


def logits_for(*probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly ``probs`` (one row per sample)."""
    return torch.tensor(probs).log()


# -- discovery and options --------------------------------------------------------------------
def test_listed_as_pseudo_label_strategies():
    table = {s.name: s for s in tlkit.strategies("pseudo_label")}
    for name in NAMES:
        assert table[name].family == "pseudo_label" and table[name].provider == "tlkit"
    assert table["fixmatch"].summary.startswith("FixMatch (Sohn et al. 2020)")


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (ConfidenceThreshold, {"threshold": 1.5}, "threshold must be a number in"),
        (ConfidenceThreshold, {"weight": -1}, "weight must be a non-negative"),
        (ConfidenceThreshold, {"warmup": 1.0}, "warmup"),
        (FixMatch, {"threshold": "high"}, "threshold must be a number"),
        (MeanTeacher, {"decay": 1.0}, "decay must be a number in \\(0, 1\\)"),
        (MeanTeacher, {"augment": "mixup"}, "augment must be one of \\['strong', 'weak'\\]"),
        (MeanTeacher, {"rampup": -0.1}, "rampup"),
    ],
)
def test_bad_options_are_explained(cls, options, message):
    with pytest.raises(ValueError, match=message):
        cls(**options)


def test_bad_options_fail_before_training(tiny_task, fast):
    with pytest.raises(ValueError, match="threshold must be a number"):
        tlkit.fit(tiny_task, epochs=1, pseudo_label=("fixmatch", {"threshold": 2}), **fast)


# -- hand-computed cores ----------------------------------------------------------------------
def test_threshold_masks_unconfident_samples_and_warms_up():
    step = SimpleNamespace(
        target_logits=logits_for([0.96, 0.04], [0.3, 0.7], [0.05, 0.95], [0.5, 0.5]),
        progress=0.1,
    )
    pl = ConfidenceThreshold(threshold=0.95, weight=2.0, warmup=0.4).tlkit_pseudo_labels(step)
    assert pl.targets.tolist() == [0, 1, 1, 0]
    # confident: 0.96 and 0.95 (>= threshold); weight 2 * warm-up 0.1 / 0.4 = 0.5
    assert pl.weights.tolist() == pytest.approx([0.5, 0.0, 0.5, 0.0])
    assert pl.logits is None  # the loss goes on the target logits themselves
    step.progress = 0.8  # after the warm-up: the full weight
    assert ConfidenceThreshold(0.6, 2.0, 0.4).tlkit_pseudo_labels(step).weights.tolist() == (
        pytest.approx([2.0, 2.0, 2.0, 0.0])
    )
    lee = ConfidenceThreshold(threshold=0.0).tlkit_pseudo_labels(step)  # Lee's original
    assert lee.weights.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_fixmatch_targets_from_weak_view_loss_on_strong_view():
    """A spy: the weak view is seen without gradient and gives targets/mask; the loss goes on the
    logits of the strong view, computed with gradient."""
    x_t = torch.zeros(3, 1, 4, 4)
    weak_logits = logits_for([0.97, 0.02, 0.01], [0.01, 0.98, 0.01], [0.2, 0.3, 0.5])
    strong_logits = torch.randn(3, 3)
    calls = []

    norm = torch.nn.BatchNorm1d(3)

    def forward(images, domain=None):
        assert domain == "target"
        view = {1.0: "weak", 2.0: "strong"}[images.flatten()[0].item()]
        calls.append((view, torch.is_grad_enabled(), norm.momentum))
        logits = (weak_logits if view == "weak" else strong_logits).clone().requires_grad_()
        return torch.zeros(3, 8), logits

    views = {"weak": x_t + 1.0, "strong": x_t + 2.0}
    step = SimpleNamespace(target_view=views.__getitem__, forward=forward, model=norm, progress=0.5)
    pl = FixMatch(threshold=0.95, weight=3.0).tlkit_pseudo_labels(step)
    # weak without gradient, strong with; neither moves BatchNorm's running statistics
    assert calls == [("weak", False, 0.0), ("strong", True, 0.0)] and norm.momentum == 0.1
    assert pl.targets.tolist() == [0, 1, 2]
    assert pl.weights.tolist() == [3.0, 3.0, 0.0]
    assert torch.equal(pl.logits.detach(), strong_logits) and pl.logits.requires_grad
    assert not pl.targets.requires_grad


def test_mean_teacher_ramp_up_and_ema_decay_hand_computed():
    assert sigmoid_rampup(0.0, 0.3) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(0.15, 0.3) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(0.3, 0.3) == sigmoid_rampup(0.9, 0.3) == 1.0
    assert sigmoid_rampup(0.0, 0.0) == 1.0
    assert ema_decay(1, 0.99) == 0.5 and ema_decay(9, 0.99) == pytest.approx(0.9)
    assert ema_decay(1000, 0.99) == 0.99


def test_mean_teacher_teacher_is_a_moving_average_of_the_student():
    student = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(student.weight, 1.0)
    trainer = SimpleNamespace(model=student, task="classification", state=SimpleNamespace(step=0))
    mt = MeanTeacher(decay=0.99)
    teacher = mt.tlkit_setup(trainer)
    assert not any(p.requires_grad for p in teacher.parameters())  # the optimiser skips it
    torch.nn.init.constant_(student.weight, 3.0)
    trainer.state.step = 1  # decay min(1 - 1/2, 0.99) = 0.5: 0.5 * 1 + 0.5 * 3
    mt.tlkit_on_step_end(trainer)
    assert teacher.weight.item() == pytest.approx(2.0)
    torch.nn.init.constant_(student.weight, 5.0)
    trainer.state.step = 3  # decay 0.75: 0.75 * 2 + 0.25 * 5
    mt.tlkit_on_step_end(trainer)
    assert teacher.weight.item() == pytest.approx(2.75)


def test_mean_teacher_consistency_is_softmax_mse_without_teacher_gradient():
    student = torch.zeros(2, 2, requires_grad=True)  # softmax (0.5, 0.5)
    teacher = logits_for([0.75, 0.25], [0.5, 0.5]).requires_grad_()
    loss = softmax_mse(student, teacher)  # ((0.25^2 + 0.25^2) + 0) / 2
    assert loss.item() == pytest.approx(0.0625)
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


# -- through fit() ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "options", "term"),
    [
        ("threshold", {"threshold": 0.3}, "pseudo_label"),
        ("fixmatch", {"threshold": 0.3}, "pseudo_label"),
        ("mean_teacher", {}, "consistency"),
    ],
)
def test_trains_through_fit_and_logs_mask_rate(tiny_task, fast, name, options, term):
    run = tlkit.fit(tiny_task, epochs=2, pseudo_label=(name, options), **fast)
    row = run.history[-1]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row[term])
    assert 0.0 < row["mask_rate"] <= 1.0
    assert 0.0 <= row["pseudo_label_accuracy"] <= 1.0  # the target's clean labels are known
    if name == "mean_teacher":
        assert 0.0 <= row["teacher_agreement"] <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_works_with_a_frozen_backbone(tiny_task, fast, name):
    # threshold trains the head on cached features; the view-based methods disable the cache
    run = tlkit.fit(tiny_task, epochs=1, mode="feature_extraction", pseudo_label=name, **fast)
    assert math.isfinite(run.history[-1]["train_loss"])


def test_mean_teacher_resumes_with_its_teacher(tiny_task, fast, tmp_path):
    opts = dict(epochs=2, mode="full", pseudo_label="mean_teacher", **fast)
    whole = tlkit.fit(tiny_task, **opts)
    first = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), max_steps=7, **opts)
    assert first.stopped_early
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), resume=True, **opts)
    assert resumed.history == whole.history  # the teacher was saved and restored


def test_regression_is_refused_with_a_reason(fast):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (32, 1, 8, 8), dtype=torch.uint8, generator=g)
    dom = tlkit.datasets.Domain(images, torch.rand(32), task="regression", name="r")
    pair = tlkit.datasets.DomainPair(dom, target=dom)
    with pytest.raises(tlkit.PluginError, match="is for classification tasks"):
        tlkit.fit(pair, epochs=1, pseudo_label="threshold", **fast)
    for family, name in [
        ("pseudo_label", "fixmatch"),
        ("pseudo_label", "mean_teacher"),
        ("adapt", "cdan"),
        ("adapt", "mcc"),
        ("adapt", "entropy_min"),
    ]:
        with pytest.raises(tlkit.PluginError, match=f"'{name}' is for classification tasks"):
            tlkit.fit(pair, epochs=1, **{family: name}, **fast)


# -- it pays: more accurate than supervised-only on few labels --------------------------------
def test_pseudo_labels_beat_supervised_only_on_few_labelled_digits():
    """Digits, 5 labels per class, 500 steps. Measured gaps (threshold - supervised) for seeds
    0, 1, 2: +4.7, +4.7, +2.2 points. The test set is evaluated once, after training (what
    ``run.last["source_accuracy"]`` would report, without an evaluation every epoch)."""
    pair = tlkit.datasets.few_labels(tlkit.datasets.load("digits"), 5, seed=0)
    data = dataclasses.replace(pair, source_test=None, target_test=None)
    opts = dict(backbone="small_cnn", mode="full", image_size=16, batch_size=10, lr=3e-3)
    opts.update(epochs=100, augment=True, progress=False, seed=0)
    supervised = tlkit.fit(dataclasses.replace(data, target=None), **opts)
    semi = tlkit.fit(data, pseudo_label=("threshold", {"threshold": 0.8}), **opts)
    sup_acc = supervised.evaluate(pair.source_test)["accuracy"]
    semi_acc = semi.evaluate(pair.source_test)["accuracy"]
    assert semi_acc > sup_acc + 0.01, (semi_acc, sup_acc)
    assert semi.last["mask_rate"] > 0.5 and semi.last["pseudo_label_accuracy"] > 0.9


def test_pseudo_label_accuracy_is_weighted_by_the_admitted_samples(tiny_task, fast, temp_strategy):
    """A step that admits nothing must not pull the epoch's pseudo-label accuracy down, and a
    step that admits more samples counts more."""
    hidden_truth = tiny_task.target.clean_labels  # the test knows it; the strategy must not

    class Sparse:
        name, family = "test_sparse_pl", "pseudo_label"
        needs_target = True
        requires_task = "classification"

        @tlkit.hookimpl
        def tlkit_pseudo_labels(self, step):
            assert not any("true" in a or "clean" in a for a in vars(step))  # no truth on a step
            truth = hidden_truth[step.target_indices]
            w = torch.zeros(len(truth))
            targets = truth.clone()
            if step.epoch == 1 and step.index % 2 == 0:  # epoch 1: every other step, 3 admitted
                w[:3] = 1.0
                targets[0] = (truth[0] + 1) % 4  # ... of which 1 wrong
            return tlkit.PseudoLabels(targets=targets, weights=w)

    temp_strategy(Sparse())
    run = tlkit.fit(tiny_task, epochs=2, mode="full", pseudo_label="test_sparse_pl", **fast)
    first, second = run.history
    assert first["pseudo_label_accuracy"] == pytest.approx(2 / 3)  # not 1/3: empty steps skip
    assert math.isnan(second["pseudo_label_accuracy"])  # nothing admitted all epoch: undefined
    logged = [r["pseudo_label_accuracy"] for r in run.step_logs if "pseudo_label_accuracy" in r]
    assert logged and all(v == pytest.approx(2 / 3) for v in logged)


def test_target_batch_ratio_sets_the_unlabelled_batch_size(tiny_task, fast, temp_strategy):
    sizes = []

    class Watch:
        name, family = "test_batch_watch", "pseudo_label"

        needs_target = True

        @tlkit.hookimpl
        def tlkit_pseudo_labels(self, step):
            sizes.append((len(step.y), len(step.x_target), len(step.target_logits)))

    temp_strategy(Watch())
    tlkit.fit(
        tiny_task,
        epochs=1,
        mode="full",
        pseudo_label="test_batch_watch",
        target_batch_ratio=3,
        **fast,
    )
    bs = fast["batch_size"]
    assert sizes and all(s == (bs, 3 * bs, 3 * bs) for s in sizes)
    with pytest.raises(tlkit.ConfigError, match="target_batch_ratio"):
        tlkit.fit(tiny_task, epochs=1, target_batch_ratio=0, **fast)
