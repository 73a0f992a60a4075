"""The training engine: reproducibility, resuming, phases, caching, schedules, EMA, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import tlkit
from tlkit.datasets import DataError, Domain, DomainPair
from tlkit.engine import ConfigError, TrainingError
from tlkit.engine.schedules import lr_multiplier
from tlkit.strategy_tools import EMA


def weights(run):
    return {k: v.clone() for k, v in run.model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- reproducibility and resuming -------------------------------------------------------------
def test_seeded_cpu_runs_are_identical(tiny_task, fast):
    a = tlkit.fit(tiny_task, epochs=2, mode="full", **fast)
    b = tlkit.fit(tiny_task, epochs=2, mode="full", **fast)
    assert a.history == b.history
    assert_same_weights(weights(a), weights(b))
    c = tlkit.fit(tiny_task, epochs=2, mode="full", **{**fast, "seed": 1})
    assert c.history != a.history


@pytest.mark.parametrize("stop_at", [3, 7, 13])  # frozen phase, mid unfrozen epoch, last epoch
def test_resume_equals_uninterrupted(tiny_task, fast, tmp_path, stop_at):
    opts = dict(epochs=3, mode="fine_tune", freeze_epochs=1, ema=0.9, **fast)
    whole = tlkit.fit(tiny_task, **opts)
    ckpt = tmp_path / f"ck{stop_at}"
    first = tlkit.fit(tiny_task, checkpoint_dir=str(ckpt), max_steps=stop_at, **opts)
    assert first.stopped_early and (ckpt / "last.pt").exists()
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(ckpt), resume=True, **opts)
    assert not resumed.stopped_early
    assert resumed.history == whole.history
    assert_same_weights(weights(resumed), weights(whole))


def test_resume_after_a_crash_from_periodic_checkpoint(tiny_task, fast, tmp_path):
    opts = dict(epochs=2, mode="full", **fast)
    whole = tlkit.fit(tiny_task, **opts)

    class Crash:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, step):
            if step.index == 8:  # after checkpoint at step 6, before the next one
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tlkit.fit(
            tiny_task, checkpoint_dir=str(tmp_path), checkpoint_every=3, observers=[Crash()], **opts
        )
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["state"]["step"] == 6
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), resume=True, **opts)
    assert resumed.history == whole.history
    assert_same_weights(weights(resumed), weights(whole))


def test_resume_from_a_saved_final_model_is_refused(tiny_task, fast, tmp_path):
    run = tlkit.fit(tiny_task, epochs=1, **fast)
    path = run.save(tmp_path / "run.pt")
    with pytest.raises(tlkit.CheckpointError, match="not a training state"):
        tlkit.fit(tiny_task, epochs=1, resume=path, **fast)


# -- phases, caching, discriminative learning rates -------------------------------------------
def test_fine_tune_freezes_then_unfreezes_with_discriminative_rates(tiny_task, fast):
    seen = []

    class Watch:
        @tlkit.hookimpl
        def tlkit_on_epoch_end(self, trainer, epoch):
            lrs = [g["base_lr"] for g in trainer.optimizer.param_groups]
            first = next(trainer.model.backbone.parameters()).detach().clone()
            seen.append((epoch, lrs, first))

    tlkit.fit(
        tiny_task,
        epochs=3,
        mode="fine_tune",
        freeze_epochs=1,
        lr_spread=100,
        observers=[Watch()],
        **fast,
    )
    (_, lrs1, w1), (_, lrs2, w2), (_, lrs3, w3) = seen
    assert len(set(lrs1)) == 1  # frozen: head only, one rate
    assert min(lrs2) == pytest.approx(fast["lr"] / 100) and max(lrs2) == fast["lr"]
    assert lrs2 == sorted(lrs2)  # early layers slower
    assert not torch.equal(w2, w3)  # the backbone trains after unfreezing


def test_default_mode_freezes_only_pretrained_backbones(tiny_task, fast):
    scratch = tlkit.fit(tiny_task, epochs=1, **fast)  # small_cnn has no pretrained weights
    assert scratch.config.mode == "full"
    model = tlkit.backbones.create_model("small_cnn", 4, pretrained=False)
    model.backbone.pretrained = True  # as if it held weights worth keeping
    before = [p.clone() for p in model.backbone.parameters()]
    tuned = tlkit.fit(tiny_task, model=model, epochs=1, freeze_epochs=1, **fast)
    assert tuned.config.mode == "fine_tune"
    assert all(torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))  # frozen
    two = tlkit.fit_two_stage(tiny_task, tiny_task, source_epochs=1, target_epochs=1, **fast)
    assert two.pretrain_run.config.mode == "full" and two.config.mode == "fine_tune"


def test_frozen_backbone_does_not_change(tiny_task, fast):
    run = tlkit.fit(tiny_task, epochs=1, mode="feature_extraction", **fast)
    torch.manual_seed(fast["seed"])  # fit() seeds before building the model
    fresh = tlkit.backbones.create_model("small_cnn", 4, pretrained=False)
    for (k, a), b in zip(
        run.model.backbone.state_dict().items(), fresh.backbone.state_dict().values()
    ):
        assert torch.equal(a, b), k


def test_feature_extraction_runs_the_backbone_once(tiny_task, fast):
    calls = {"images": 0}
    model = tlkit.backbones.create_model("small_cnn", 4, pretrained=False)
    model.backbone.register_forward_hook(
        lambda m, inp, out: calls.__setitem__("images", calls["images"] + len(inp[0]))
    )
    run = tlkit.fit(tiny_task, model=model, epochs=4, mode="feature_extraction", **fast)
    evaluated = len(tiny_task.source_test) + len(tiny_task.target_test)
    # cached: four epochs cost one pass over each set; the unlabelled target is not featurised,
    # since no strategy trains on it
    assert calls["images"] == len(tiny_task.source) + evaluated
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]  # the head learns

    calls["images"] = 0
    tlkit.fit(
        tiny_task, model=model, epochs=2, mode="feature_extraction", adapt="entropy_min", **fast
    )
    assert calls["images"] == len(tiny_task.source) + len(tiny_task.target) + evaluated


def test_run_features_leave_batchnorm_statistics_alone(tiny_task, fast):
    run = tlkit.fit(tiny_task, epochs=1, mode="full", **fast)
    assert not run.model.training  # a finished run is ready for inference
    run.model.train()  # even when a user switched it back to training
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    feats = run.features(tiny_task.target_test)
    assert feats.shape == (len(tiny_task.target_test), run.model.backbone.num_features)
    assert run.model.training  # restored
    after = run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    # the features are what the head sees
    logits = run.model.head(feats)
    assert torch.allclose(logits, run.predict_outputs(tiny_task.target_test), atol=1e-5)


def test_observers_can_predict_during_training(tiny_task, fast):
    seen = []

    class Watch:
        @tlkit.hookimpl
        def tlkit_on_epoch_end(self, trainer, epoch, metrics):
            probs = trainer.predict_outputs(tiny_task.source.images).softmax(dim=1)
            seen.append((probs.shape, trainer.model.training))

    tlkit.fit(tiny_task, epochs=2, mode="full", observers=[Watch()], **fast)
    n = len(tiny_task.source)
    assert seen == [((n, 4), True), ((n, 4), True)]  # train mode restored after predicting


# -- strategies through hooks -----------------------------------------------------------------
def test_extra_loss_terms_are_summed_and_logged(tiny_task, fast, temp_strategy):
    class Penalty:
        name, family = "test_penalty", "regularizer"

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            return {"penalty": 0.5 * step.logits.pow(2).mean()}

    temp_strategy(Penalty)
    run = tlkit.fit(tiny_task, epochs=2, regularize="test_penalty", **fast)
    row = run.history[-1]
    assert row["penalty"] > 0
    assert row["train_loss"] == pytest.approx(row["supervised"] + row["penalty"], rel=1e-5)


def test_pseudo_labels_feed_the_loss_and_log_mask_and_accuracy(tiny_task, fast, temp_strategy):
    class Oracle:  # pseudo-labels = argmax, half masked; checks the plumbing, not an algorithm
        name, family = "test_argmax", "pseudo_label"
        needs_target = True

        @tlkit.hookimpl
        def tlkit_pseudo_labels(self, step):
            probs = step.target_logits.detach().softmax(1)
            w = (torch.arange(len(probs)) % 2 == 0).float()
            return tlkit.PseudoLabels(probs.argmax(1), w)

    temp_strategy(Oracle)
    run = tlkit.fit(tiny_task, epochs=2, pseudo_label="test_argmax", **fast)
    row = run.history[-1]
    assert row["mask_rate"] == pytest.approx(0.5)
    assert 0.0 <= row["pseudo_label_accuracy"] <= 1.0 and row["pseudo_label"] > 0


def test_setup_modules_are_trained_and_checkpointed(tiny_task, fast, temp_strategy, tmp_path):
    class WithModule:
        name, family = "test_module", "adapt"

        def __init__(self):
            self.disc = None

        @tlkit.hookimpl
        def tlkit_setup(self, trainer):
            self.disc = torch.nn.Linear(trainer.model.backbone.num_features, 1)
            return self.disc

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            return {"disc": self.disc(step.features).pow(2).mean()}

    temp_strategy(WithModule)
    run = tlkit.fit(tiny_task, epochs=1, adapt="test_module", checkpoint_dir=str(tmp_path), **fast)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["extra_modules"]["test_module"]
    assert saved["weight"].shape == (1, 128)
    assert run.history[-1]["disc"] < 1.0


def test_a_failing_hook_names_the_plugin_and_hook(tiny_task, fast, temp_strategy):
    class Broken:
        name, family = "test_broken", "regularizer"

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            raise ZeroDivisionError("oops")

    temp_strategy(Broken)
    with pytest.raises(tlkit.PluginError, match="'test_broken' failed in hook tlkit_extra_losses"):
        tlkit.fit(tiny_task, epochs=1, regularize="test_broken", **fast)


def test_observers_see_every_step_and_epoch_and_can_stop(tiny_task, fast):
    class Count:
        steps = epochs = 0

        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer):
            Count.steps += 1
            if trainer.state.step >= 10:
                trainer.request_stop()

        @tlkit.hookimpl
        def tlkit_on_epoch_end(self):
            Count.epochs += 1

    run = tlkit.fit(tiny_task, epochs=5, observers=[Count()], **fast)
    assert Count.steps == 10 and run.stopped_early
    assert Count.epochs == len(run.history) == 10 // 6  # 96 labelled / 16 = 6 steps an epoch


# -- divergence, bad input --------------------------------------------------------------------
def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(
    tiny_task, fast, temp_strategy, tmp_path
):
    class Explodes:
        name, family = "test_nan", "loss"
        requires_task = "classification"

        @tlkit.hookimpl
        def tlkit_supervised_loss(self, logits, targets, step):
            loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            return loss * math.nan if step.index == 7 else loss

    temp_strategy(Explodes)
    with pytest.raises(TrainingError, match="at step 8") as err:
        tlkit.fit(
            tiny_task,
            epochs=3,
            loss="test_nan",
            checkpoint_dir=str(tmp_path),
            checkpoint_every=2,
            log_every=4,
            **fast,
        )
    assert "last good checkpoint" in str(err.value)
    good = torch.load(tmp_path / "last.pt", weights_only=True)
    assert good["state"]["step"] == 6
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


def test_head_size_mismatch_is_explained(tiny_task, fast):
    model = tlkit.backbones.create_model("small_cnn", 7, pretrained=False)
    with pytest.raises(DataError, match="7 outputs but the data has 4 classes"):
        tlkit.fit(tiny_task, model=model, epochs=1, **fast)


def test_labels_outside_range_are_explained():
    with pytest.raises(DataError, match=r"outside \[0, 3\)"):
        Domain(
            torch.zeros(4, 1, 8, 8, dtype=torch.uint8),
            torch.tensor([0, 1, 2, 5]),
            classes=("a", "b", "c"),
        )


def test_empty_and_misshaped_data_are_explained():
    with pytest.raises(DataError, match="source domain is empty"):
        DomainPair(Domain(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), torch.zeros(0)))
    with pytest.raises(DataError, match="1 \\(grayscale\\) or 3 \\(RGB\\) channels"):
        Domain(torch.zeros(4, 5, 8, 8, dtype=torch.uint8), torch.zeros(4))
    with pytest.raises(DataError, match="shape \\(N, C, H, W\\)"):
        Domain(torch.zeros(4, 8, dtype=torch.uint8), torch.zeros(4))


def test_grayscale_is_converted_for_an_rgb_backbone(fast):
    model = tlkit.backbones.create_model("small_cnn", 4, pretrained=False)
    gray = torch.randint(0, 255, (2, 1, 10, 10), dtype=torch.uint8)
    assert model(gray).shape == (2, 4)


def test_bad_options_are_explained(tiny_task, fast):
    with pytest.raises(ConfigError, match="unknown fit\\(\\) options \\['epocs'\\]"):
        tlkit.fit(tiny_task, epocs=3, **fast)
    with pytest.raises(ConfigError, match="mode='warp' is not valid"):
        tlkit.fit(tiny_task, mode="warp", **fast)
    with pytest.raises(ConfigError, match="no target"):
        tlkit.fit(DomainPair(tiny_task.source), adapt="anything", **fast)
    with pytest.raises(
        tlkit.PluginError, match="unknown loss strategy 'nope'. Known: .*cross_entropy"
    ):
        tlkit.fit(tiny_task, loss="nope", **fast)


# -- schedules and EMA: hand-computed cases ---------------------------------------------------
def test_schedules_hand_computed():
    assert lr_multiplier("cosine", 0, 100, warmup=0.1) == pytest.approx(0.1)
    assert lr_multiplier("cosine", 9, 100, warmup=0.1) == pytest.approx(1.0)
    assert lr_multiplier("cosine", 55, 100, warmup=0.1) == pytest.approx(0.5)
    assert lr_multiplier("cosine", 100, 100) == pytest.approx(0.0)
    assert lr_multiplier("onecycle", 0, 100) == pytest.approx(1 / 25)
    assert lr_multiplier("onecycle", 25, 100) == pytest.approx(1.0)
    assert lr_multiplier("constant", 50, 100) == 1.0


def test_ema_hand_computed():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(net.weight, 1.0)
    ema = EMA(net, decay=0.9)
    torch.nn.init.constant_(net.weight, 3.0)
    ema.update(net)  # 0.9 * 1 + 0.1 * 3
    assert ema.module.weight.item() == pytest.approx(1.2)


# -- learning for real ------------------------------------------------------------------------
def test_small_cnn_learns_bundled_digits():
    task = tlkit.datasets.load("digits")
    run = tlkit.fit(task, "small_cnn", epochs=3, mode="full", lr=3e-3, progress=False)
    assert run.last["source_accuracy"] > 0.85
    res = run.evaluate(task.source_test)
    assert res["accuracy"] == pytest.approx(run.last["source_accuracy"])
    cm = res["confusion_matrix"]
    assert cm.shape == (10, 10) and int(cm.sum()) == len(task.source_test)
    assert len(res["per_class_accuracy"]) == 10


def test_regression_head_learns_brightness(fast):
    g = torch.Generator().manual_seed(0)
    level = torch.rand(256, generator=g)
    images = level.view(-1, 1, 1, 1) * 200 + torch.rand(256, 1, 12, 12, generator=g) * 40
    dom = Domain(images.to(torch.uint8), level, task="regression", name="bright")
    train, test = dom.split(0.25)
    run = tlkit.fit(DomainPair(train, test), epochs=6, mode="full", **fast)
    baseline = (test.labels - train.labels.mean()).abs().mean().item()
    assert run.last["source_mae"] < 0.5 * baseline
    assert set(run.evaluate(test)) == {"mae", "rmse", "r2", "baseline_mae", "baseline_rmse"}


def test_two_stage_regression_then_classification(tiny_task, fast):
    imgs = tiny_task.source.images
    bright = imgs.float().mean(dim=(1, 2, 3)) / 255
    reg = Domain(imgs, bright, task="regression", name="brightness")
    run = tlkit.fit_two_stage(
        reg,
        tiny_task,
        source_epochs=2,
        target_epochs=1,
        source_options={"mode": "full"},
        mode="feature_extraction",
        **fast,
    )
    assert run.pretrain_run.task == "regression" and run.task == "classification"
    pre = run.pretrain_run.model.backbone.state_dict()
    post = run.model.backbone.state_dict()
    for k in pre:  # stage 2 (frozen) starts from, and keeps, the stage-1 backbone
        assert torch.equal(pre[k], post[k]), k
    assert run.model.out_features == 4


def test_target_scores_join_the_history_and_can_be_monitored(tiny_task, fast, temp_strategy):
    seen = {}

    class NegEntropy:
        name, family = "test_score", "validator"

        @tlkit.hookimpl
        def tlkit_before_evaluate(self, trainer):
            seen["before"] = seen.get("before", 0) + 1

        @tlkit.hookimpl
        def tlkit_target_scores(self, logits, features):
            seen["shapes"] = (tuple(logits.shape), tuple(features.shape))
            p = logits.softmax(1)
            return {"score_neg_entropy": float((p * p.clamp_min(1e-8).log()).sum(1).mean())}

    temp_strategy(NegEntropy)
    run = tlkit.fit(tiny_task, epochs=2, validate="test_score", monitor="score_neg_entropy", **fast)
    assert seen["before"] == 2
    assert seen["shapes"] == ((len(tiny_task.target), 4), (len(tiny_task.target), 128))
    scores = [row["score_neg_entropy"] for row in run.history]
    assert run.best["metric"] == "score_neg_entropy"
    assert run.best["value"] == max(scores)  # higher is better for scores


def test_step_forward_runs_extra_views_with_gradients(tiny_task, fast, temp_strategy):
    class Consistency:
        name, family = "test_views", "regularizer"
        needs_images = True

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            _, logits = step.forward(step.x.flip(-1))
            assert logits.requires_grad and logits.shape == step.logits.shape
            return {"flip": (logits - step.logits).pow(2).mean()}

    temp_strategy(Consistency)
    run = tlkit.fit(tiny_task, epochs=1, regularize="test_views", **fast)
    assert run.history[-1]["flip"] >= 0


def test_fit_works_under_no_grad(tiny_task, fast):
    with torch.no_grad():
        run = tlkit.fit(tiny_task, epochs=1, **fast)
    assert run.history[0]["train_loss"] > 0


def test_evaluation_restores_frozen_batchnorm(tiny_task, fast):
    from tlkit.engine.evaluate import predict_outputs

    model = tlkit.backbones.create_model("small_cnn", 4, pretrained=False)
    model.train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.eval()  # frozen by the trainer
    predict_outputs(model, tiny_task.source_test.images)
    assert model.training and not bn.training


def test_with_ema_the_run_model_is_the_one_the_history_measured(tiny_task, fast):
    run = tlkit.fit(tiny_task, epochs=2, ema=0.9, **fast)
    assert run.evaluate(tiny_task.source_test)["accuracy"] == pytest.approx(
        run.last["source_accuracy"]
    )


def test_warmup_never_overshoots_the_base_rate():
    # 25 steps x 0.05 warm-up = 1.25 steps: the second step must not exceed 1.0
    assert max(lr_multiplier("cosine", s, 25, warmup=0.05) for s in range(25)) <= 1.0
