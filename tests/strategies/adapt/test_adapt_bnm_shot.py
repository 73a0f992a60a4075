"""BNM and SHOT: target-only objectives, each against a hand-computed case, through fit, and on a
source-free step (empty source batch), as the engine's source-free mode will run them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tlkit_strategies.adapt.bnm import BNM, bnm_loss
from tlkit_strategies.adapt.shot import SHOT, cluster_pseudo_labels, information_maximization

import tlkit


def h(*p):
    """Shannon entropy (nats) of a distribution given by hand."""
    return -sum(v * math.log(v) for v in p)


# -- BNM --------------------------------------------------------------------------------------
def test_bnm_hand_computed():
    # A = [[.8, .2], [.2, .8]] is symmetric with eigenvalues 1.0 and 0.6: ||A||_* = 1.6, B = 2
    diverse = torch.tensor([[0.8, 0.2], [0.2, 0.8]]).log()
    assert bnm_loss(diverse).item() == pytest.approx(-0.8, rel=1e-5)
    # rank one: [[.9, .1], [.9, .1]] has one singular value sqrt(2 * (.81 + .01))
    collapsed = torch.tensor([[0.9, 0.1], [0.9, 0.1]]).log()
    assert bnm_loss(collapsed).item() == pytest.approx(-math.sqrt(1.64) / 2, rel=1e-5)
    # entropy prefers the collapsed batch (it is more confident); BNM the diverse one
    assert h(0.9, 0.1) < h(0.8, 0.2)
    assert bnm_loss(diverse) < bnm_loss(collapsed)


def test_bnm_bounds():
    b, k = 6, 3
    uniform = torch.zeros(b, k)  # rank one: -1 / sqrt(B K), the largest value
    assert bnm_loss(uniform).item() == pytest.approx(-1 / math.sqrt(b * k), rel=1e-5)
    spread = torch.eye(k).repeat(b // k, 1) * 40  # one-hot, evenly over classes: the smallest
    assert bnm_loss(spread).item() == pytest.approx(-math.sqrt(min(b, k) / b), rel=1e-5)


def test_bnm_gradient_spreads_a_collapsing_batch():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [1.0, 0.0]], requires_grad=True)
    bnm_loss(logits).backward()
    # descending the loss raises class 1 for the least confident sample the most
    assert -logits.grad[2, 1] > 0 and -logits.grad[2, 1] > -logits.grad[0, 1]


# -- SHOT's information maximisation ---------------------------------------------------------
def test_information_maximization_hand_computed():
    # confident and diverse: L_ent = H(.9, .1), H(mean) = H(.5, .5) = ln 2
    logits = torch.tensor([[0.9, 0.1], [0.1, 0.9]]).log()
    im, ent, div = information_maximization(logits, eps=0.0)
    assert ent.item() == pytest.approx(h(0.9, 0.1), rel=1e-5)
    assert div.item() == pytest.approx(math.log(2), rel=1e-5)
    assert im.item() == pytest.approx(h(0.9, 0.1) - math.log(2), rel=1e-5)
    # collapsed on class 0: H(mean) = H(.9, .1) cancels the entropy
    collapsed = torch.tensor([[0.9, 0.1], [0.9, 0.1]]).log()
    assert information_maximization(collapsed, eps=0.0)[0].item() == pytest.approx(0.0, abs=1e-6)
    # diversity weight 0 is plain entropy minimisation
    assert information_maximization(logits, 0.0)[0].item() == pytest.approx(h(0.9, 0.1), rel=1e-5)
    # eps inside the log, as in the authors' code
    _, _, div_eps = information_maximization(logits, eps=1e-5)
    assert div_eps.item() == pytest.approx(-math.log(0.5 + 1e-5), rel=1e-6)


def test_shot_pseudo_labels_follow_the_feature_clusters():
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.0, 1.0]])
    # the classifier gets sample 2 wrong; its features sit in cluster 1
    logits = torch.tensor([[9.0, 0.0, 0.0], [9.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]])
    assert cluster_pseudo_labels(features, logits).tolist() == [0, 0, 1, 1]


def test_shot_pseudo_labels_only_use_predicted_classes():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    # sample 2 is almost alone in class 2's soft centroid, but class 2 is nobody's argmax ...
    logits = torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [5.0, 0.0, 4.9]])
    assert cluster_pseudo_labels(features, logits)[2].item() != 2
    # ... once it is predicted, sample 2 takes it
    logits[2] = torch.tensor([4.9, 0.0, 5.0])
    assert cluster_pseudo_labels(features, logits).tolist() == [0, 1, 2]


def test_shot_pseudo_labels_by_hand_without_refinement():
    # rounds=0: centroids from the soft predictions only
    f = torch.tensor([[3.0, 0.0], [0.0, 3.0]])  # with a 1 appended, normalised:
    # f0 = (1, 0, 1) / sqrt(2), f1 = (0, 1, 1) / sqrt(2); f0 . f0 = 1, f0 . f1 = 1/2
    p = torch.tensor([[0.25, 0.75], [0.75, 0.25]])
    # c_0 = .25 f0 + .75 f1, c_1 = .75 f0 + .25 f1 (each class's weights sum to 1), |c_0| = |c_1|
    # f0 . c_0 = .25 + .375 = .625 < f0 . c_1 = .75 + .125 = .875: sample 0 goes to class 1
    assert cluster_pseudo_labels(f, p.log(), rounds=0).tolist() == [1, 0]


# -- through fit -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "adapt"),
    [("bnm", "bnm"), ("shot", "shot"), ("shot", ("shot", {"pseudo_label": 0.3, "warmup": 0.3}))],
)
def test_target_objectives_train_and_log(tiny_task, fast, name, adapt):
    run = tlkit.fit(tiny_task, epochs=2, adapt=adapt, log_every=1, **fast)
    row = run.last
    assert math.isfinite(row[name]) and row[name] < 0  # both reward confident, diverse targets
    assert row["train_loss"] == pytest.approx(row["supervised"] + row[name], rel=1e-4)
    if name == "shot":
        assert 0 <= row["shot_entropy"] <= math.log(4) + 1e-6
        assert 0 <= row["shot_diversity"] <= math.log(4) + 1e-6
        # pseudo-labels only when asked for with source data; the engine judges them
        assert ("pseudo_label_accuracy" in row) == (adapt != "shot")
        warm = adapt[1]["warmup"] if isinstance(adapt, tuple) else 0.125  # of 12 steps
        shot = [w["shot"] for w in run.step_logs]
        assert all(v == 0.0 for v in shot[: math.ceil(12 * warm)])  # nothing during the warm-up
        assert all(v != 0.0 for v in shot[math.ceil(12 * warm) :])


def test_shot_resumes_exactly(tiny_task, fast, tmp_path):
    opts = dict(epochs=3, adapt=("shot", {"pseudo_label": 0.3}), **fast)
    whole = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "a"), **opts)
    tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), max_steps=9, **opts)  # mid-epoch 2
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["strategy_state"]["shot"]["labels_epoch"] == 2  # the pseudo-labels are kept ...
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), resume=True, **opts)
    assert resumed.history == whole.history  # ... and the resumed run uses the same ones


@pytest.mark.parametrize(
    ("cls", "options", "match"),
    [
        (BNM, {"trade_off": 0}, "trade_off"),
        (SHOT, {"pseudo_label": -1}, "pseudo_label"),
        (SHOT, {"diversity": "lots"}, "diversity"),
        (SHOT, {"freeze_head": "sometimes"}, "freeze_head"),
        (SHOT, {"warmup": 2}, "warmup"),
    ],
)
def test_bad_options_are_explained(cls, options, match):
    with pytest.raises(ValueError, match=match):
        cls(**options)


# -- source-free steps ------------------------------------------------------------------------
def source_free_step(trainer, batch=8):
    """A step as the source-free mode will give it: 0-row source tensors, a target batch."""
    target = trainer.target
    idx = torch.arange(batch)
    x_t = target.images[idx].float() / 255
    feats = trainer.model.features(x_t)
    logged = {}
    return SimpleNamespace(
        trainer=trainer,
        epoch=1,
        progress=0.0,
        x=x_t[:0],
        y=torch.zeros(0, dtype=torch.long),
        indices=torch.zeros(0, dtype=torch.long),
        features=feats[:0],
        logits=trainer.model.head(feats)[:0],
        x_target=x_t,
        target_indices=idx,
        target_features=feats,
        target_logits=trainer.model.head(feats),
        log=lambda name, value, weight=1.0: logged.__setitem__(name, value),
        log_target_predictions=lambda pred, mask=None: logged.__setitem__("judged", pred),
        logged=logged,
    )


@pytest.mark.parametrize(
    "strategy", [BNM(), SHOT(pseudo_label=0.3, warmup=0), SHOT(pseudo_label=0, warmup=0)]
)
def test_objectives_work_on_a_source_free_step(tiny_task, strategy):
    assert strategy.source_free is True
    trainer = tlkit.Trainer(tiny_task, backbone="small_cnn", progress=False, device="cpu")

    step = source_free_step(trainer)
    ((name, loss),) = strategy.tlkit_extra_losses(step=step).items()
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()  # the gradient reaches the backbone through the target batch alone
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.backbone.parameters()
    )
    if isinstance(strategy, SHOT) and strategy.pseudo_label > 0:
        assert step.logged["judged"].shape == (8,)  # pseudo-labels of the target batch


def test_shot_freezes_the_head_and_labels_at_once_in_source_free_runs_only():
    model = tlkit.backbones.create_model("small_cnn", 4, pretrained=False)
    trainer = SimpleNamespace(model=model, config=SimpleNamespace(source_free=True))
    shot = SHOT()
    shot.tlkit_setup(trainer=trainer)
    assert (shot.pseudo_label, shot.warmup) == (0.3, 0.0)  # the paper's source-free recipe
    assert not any(p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in model.backbone.parameters())
    shot.tlkit_on_fit_end()
    assert all(p.requires_grad for p in model.head.parameters())  # handed back as it came
    trainer.config.source_free = False
    joint = SHOT()
    joint.tlkit_setup(trainer=trainer)  # with source data the head keeps learning
    assert all(p.requires_grad for p in model.head.parameters())
    assert (joint.pseudo_label, joint.warmup) == (0.0, 0.125)
    SHOT(freeze_head=True).tlkit_setup(trainer=trainer)
    assert not any(p.requires_grad for p in model.head.parameters())


# -- the engine's source-free mode ------------------------------------------------------------
@pytest.mark.parametrize("name", ["shot", "bnm"])
def test_source_free_run_adapts_the_backbone_only_from_the_target(tiny_task, fast, name):
    source_run = tlkit.fit(tiny_task, epochs=2, **fast)
    head = [p.detach().clone() for p in source_run.model.head.parameters()]
    body = [p.detach().clone() for p in source_run.model.backbone.parameters()]
    run = tlkit.fit(tiny_task, model=source_run, epochs=2, adapt=name, source_free=True, **fast)
    row = run.last
    assert "supervised" not in row and math.isfinite(row[name])
    assert row["train_loss"] == pytest.approx(row[name], rel=1e-5)
    moved = [not torch.equal(a, b) for a, b in zip(body, run.model.backbone.parameters())]
    assert any(moved)  # the backbone learnt from the target alone
    kept = [torch.equal(a, b) for a, b in zip(head, run.model.head.parameters())]
    assert all(kept) == (name == "shot")  # SHOT keeps the source hypothesis
    assert all(p.requires_grad for p in run.model.head.parameters())  # handed back trainable
    if name == "shot":
        assert 0 <= row["pseudo_label_accuracy"] <= 1  # pseudo-labels on, from the first step
