"""Contract pieces for domain adaptation beyond feature alignment: BatchNorm per domain
(``domain_bn``), transforming the source batch (pixel-level methods), and a second optimiser
for adversaries (a GAN's discriminator)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import tlkit
from tlkit.errors import CheckpointError
from tlkit.step import forward_domain


def first_batchnorm(model):
    return next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))


class WatchBatchNorm:
    """Records (batch size, forward domain, training?) of every pass through the first BN."""

    name, family, needs_target = "test_watch_bn", "adapt", True

    def __init__(self):
        self.passes = []

    @tlkit.hookimpl
    def tlkit_setup(self, trainer):
        bn = first_batchnorm(trainer.model)
        bn.register_forward_pre_hook(
            lambda m, args: self.passes.append((len(args[0]), forward_domain(), m.training))
        )

    @tlkit.hookimpl
    def tlkit_extra_losses(self):
        return None


@pytest.mark.parametrize("mode", ["shared", "separate"])
def test_domain_bn_decides_what_batchnorm_sees(tiny_task, fast, temp_strategy, mode):
    watch = WatchBatchNorm()
    temp_strategy(watch)
    tlkit.fit(tiny_task, epochs=1, adapt="test_watch_bn", domain_bn=mode, **fast)
    training = [(n, d) for n, d, t in watch.passes if t]
    bs = fast["batch_size"]
    if mode == "shared":
        assert set(training) == {(2 * bs, None)}  # one batch of both domains
    else:
        assert training[:2] == [(bs, "source"), (bs, "target")]
        assert set(training) == {(bs, "source"), (bs, "target")}
    evaluated = {d for n, d, t in watch.passes if not t}
    assert evaluated == {"source", "target"}  # each held-out set evaluated as its domain


def test_auto_domain_bn_follows_what_the_strategies_declare(tiny_task, fast, temp_strategy):
    watch = WatchBatchNorm()
    temp_strategy(watch)
    shared = tlkit.Trainer(tiny_task, adapt="test_watch_bn", **fast)
    assert shared.config.domain_bn == "shared" and not shared.net.separate_domains
    adversarial = tlkit.Trainer(tiny_task, adapt=["test_watch_bn", "dann"], **fast)
    assert adversarial.config.domain_bn == "separate" and adversarial.net.separate_domains
    # an explicit choice wins over the declaration
    assert tlkit.Trainer(tiny_task, adapt="dann", domain_bn="shared", **fast).config.domain_bn == (
        "shared"
    )


def test_a_wrong_domain_bn_declaration_is_refused_at_registration():
    class Odd(WatchBatchNorm):
        name = "test_odd_bn"
        domain_bn = "apart"

    with pytest.raises(tlkit.PluginError, match="domain_bn must be 'shared' or 'separate'"):
        tlkit.register(Odd())


def test_separate_domain_bn_is_a_documented_option():
    with pytest.raises(tlkit.ConfigError, match="domain_bn='both' is not valid"):
        tlkit.FitConfig(domain_bn="both")


class Darken(nn.Module):
    """A one-parameter 'generator': images times a learnt gain."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.5))


class Discriminator(nn.Module):
    own_optimizer = True  # trained by the second optimiser only

    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, 1)


class TinyGAN:
    """Transforms the source batch with a generator; a discriminator learns on its own step."""

    name, family, needs_target = "test_gan", "adapt", True

    def __init__(self):
        self.seen = []

    @tlkit.hookimpl
    def tlkit_setup(self, trainer):
        self.modules = nn.ModuleDict(
            {"g": Darken(), "d": Discriminator(trainer.model.backbone.num_features)}
        )
        return self.modules

    @tlkit.hookimpl
    def tlkit_transform_source(self, step):
        return step.x * self.modules["g"].gain

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step):
        fooled = self.modules["d"].fc(step.features.float()).mean()
        return {"fool": -fooled * 0.01}

    @tlkit.hookimpl
    def tlkit_adversary_losses(self, step):
        d = self.modules["d"].fc
        real = d(step.target_features.detach().float())
        fake = d(step.features.detach().float())
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
        return {"discriminator": loss}


def test_transform_source_and_a_second_optimiser(tiny_task, fast, temp_strategy, tmp_path):
    temp_strategy(TinyGAN)
    seen = {}

    class Inspect:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer, step):
            gan = trainer.strategies["test_gan"]
            main = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
            seen["d_in_main"] = any(id(p) in main for p in gan.modules["d"].parameters())
            seen["g_in_main"] = id(gan.modules["g"].gain) in main
            seen["gain"] = float(gan.modules["g"].gain.detach())

    opts = dict(epochs=2, mode="full", adapt="test_gan", **fast)
    run = tlkit.fit(tiny_task, observers=[Inspect()], checkpoint_dir=str(tmp_path / "a"), **opts)
    assert seen == {"d_in_main": False, "g_in_main": True, "gain": pytest.approx(seen["gain"])}
    assert seen["gain"] != 0.5  # the generator learnt through the classifier's loss
    assert run.history[-1]["discriminator"] > 0 and "fool" in run.history[-1]
    saved = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert saved["adversary_optimizer"]["state"]  # the second optimiser's moments are kept
    tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), max_steps=7, **opts)
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), resume=True, **opts)
    assert resumed.history == run.history


def test_a_bad_transform_names_the_strategy(tiny_task, fast, temp_strategy):
    class Shrinks:
        name, family = "test_shrinks", "adapt"

        @tlkit.hookimpl
        def tlkit_transform_source(self, step):
            return step.x[:, :, :4, :4]

    temp_strategy(Shrinks)
    with pytest.raises(
        tlkit.PluginError,
        match=r"'test_shrinks' returned a bad result from tlkit_transform_source: it must return float images of shape \(16, 1, 16, 16\)",
    ):
        tlkit.fit(tiny_task, epochs=1, adapt="test_shrinks", **fast)


class TargetEntropy:
    """Entropy of the target predictions (a source-free objective for the test)."""

    name, family, needs_target, source_free = "test_sf_entropy", "adapt", True, True

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step):
        assert len(step.y) == 0 and step.logits.shape[0] == 0  # no source batch at all
        p = step.target_logits.float().softmax(1)
        return {"target_entropy": -(p * p.clamp_min(1e-8).log()).sum(1).mean()}


def test_source_free_adaptation_uses_only_the_target(tiny_task, fast, temp_strategy):
    temp_strategy(TargetEntropy)
    source_run = tlkit.fit(tiny_task, epochs=2, **fast)
    target_only = tlkit.datasets.DomainPair(
        tiny_task.source, target=tiny_task.target, target_test=tiny_task.target_test
    )
    run = tlkit.fit(
        target_only, model=source_run, epochs=2, adapt="test_sf_entropy", source_free=True, **fast
    )
    # an epoch is one pass over the target: its last batch is filled from the next pass
    steps = math.ceil(len(tiny_task.target) / fast["batch_size"])
    assert [row["step"] for row in run.history] == [steps, 2 * steps]
    assert "supervised" not in run.history[0] and "target_accuracy" in run.history[0]
    assert run.history[-1]["target_entropy"] < run.history[0]["target_entropy"]
    with pytest.raises(tlkit.ConfigError, match="adapt='dann' learns from labelled source data"):
        tlkit.fit(tiny_task.target, model=source_run, adapt="dann", source_free=True, **fast)
    with pytest.raises(tlkit.PluginError, match="no strategy gave this step a loss"):
        tlkit.fit(tiny_task.target, model=source_run, epochs=1, source_free=True, **fast)


def test_source_free_leaves_the_source_run_alone_and_trains_in_full(tiny_task, fast, temp_strategy):
    temp_strategy(TargetEntropy)
    source_run = tlkit.fit(tiny_task, epochs=1, **fast)
    source_run.model.backbone.pretrained = True  # as if pretrained: mode="auto" must not freeze
    before = {k: v.clone() for k, v in source_run.model.state_dict().items()}
    adapted = tlkit.fit(tiny_task.target, model=source_run, epochs=1, adapt="test_sf_entropy",
                        source_free=True, **fast)  # fmt: skip
    assert adapted.config.mode == "full" and adapted.model is not source_run.model
    assert all(torch.equal(before[k], v) for k, v in source_run.model.state_dict().items())


def test_extra_views_run_as_the_domain_the_strategy_names(tiny_task, fast, temp_strategy):
    seen = []

    class Views:
        name, family, needs_target = "test_views_domain", "adapt", True

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            bn = first_batchnorm(step.model)
            handle = bn.register_forward_pre_hook(lambda m, a: seen.append(forward_domain()))
            step.forward(step.x_target, domain="target")
            step.forward(step.x)
            handle.remove()
            return None

    temp_strategy(Views)
    tlkit.fit(tiny_task, epochs=1, adapt="test_views_domain", domain_bn="separate", max_steps=1,
              **fast)  # fmt: skip
    assert seen == ["target", None]  # named: that domain; unnamed: no domain claimed


def test_a_new_learning_rate_reaches_the_second_optimiser_on_resume(
    tiny_task, fast, temp_strategy, tmp_path
):
    temp_strategy(TinyGAN)
    rates = []

    class Rates:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer):
            rates.append(trainer.adversary_optimizer.param_groups[0]["base_lr"])

    opts = dict(epochs=2, mode="full", adapt="test_gan", checkpoint_dir=str(tmp_path), **fast)
    tlkit.fit(tiny_task, max_steps=3, **opts)
    tlkit.fit(tiny_task, resume=True, observers=[Rates()], **{**opts, "lr": 1e-5})
    assert rates and set(rates) == {1e-5}


# -- BatchNorm running statistics per domain (domain_bn="separate") ---------------------------
def test_domain_statistics_keep_a_source_copy_and_the_target_live():
    from tlkit.engine.domain_stats import DomainStatistics
    from tlkit.step import domain_context

    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    model = nn.Sequential(bn)
    stats = DomainStatistics(model)
    source, target = torch.randn(64, 3) + 5, torch.randn(64, 3) - 5
    with domain_context("source"):
        model(source)
    with domain_context("target"):
        model(target)
    only_target, only_source = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    only_target(target), only_source(source)
    # the layer's own buffers followed the target pass alone, the copy the source pass alone
    assert torch.allclose(bn.running_mean, only_target.running_mean)
    assert torch.allclose(stats.source[0]["running_var"], only_source.running_var)
    # evaluating as the source uses the source statistics, and puts the target's back after
    model.eval()
    with torch.no_grad(), domain_context("source"):
        as_source = model(source)
    assert torch.allclose(as_source, only_source.eval()(source), atol=1e-5)
    assert torch.allclose(bn.running_mean, only_target.running_mean)
    # two source passes in one graph still backpropagate (autograd never sees the swaps)
    model.train()
    x = source.clone().requires_grad_()
    with domain_context("source"):
        (model(x).pow(2).sum() + model(2 * x).pow(2).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # state round trip; without the hooks every pass updates the layer's own buffers
    copy = stats.state_dict()
    stats.load_state_dict(copy)
    assert torch.equal(stats.source[0]["running_mean"], copy[0]["running_mean"])
    stats.remove()
    before = bn.running_mean.clone()
    with domain_context("source"):
        model(source)
    assert not torch.allclose(bn.running_mean, before)


def test_separate_runs_evaluate_each_domain_with_its_statistics(tiny_task, fast, tmp_path):
    trainer = tlkit.Trainer(tiny_task, adapt="dann", epochs=1, checkpoint_dir=tmp_path, **fast)
    assert trainer.config.domain_bn == "separate"
    run = trainer.fit()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["source_bn_stats"]
    bn = first_batchnorm(run.model)
    layers = [m for m in run.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    source_mean = saved[layers.index(bn)]["running_mean"]
    # the model keeps the target's statistics; the checkpoint keeps the source's beside them
    assert not torch.allclose(bn.running_mean, source_mean)
    assert trainer.domain_stats is not None and not trainer.domain_stats.handles  # unhooked
    # the run's own source accuracy was measured with the source statistics
    from tlkit.engine.domain_stats import DomainStatistics

    stats = DomainStatistics(run.model)
    stats.load_state_dict(saved)
    with_source = trainer.evaluate_epoch()["source_accuracy"]
    stats.remove()
    assert with_source == pytest.approx(run.history[-1]["source_accuracy"])


def test_dsbn_keeps_its_own_domain_statistics(tiny_task, fast):
    """DSBN's source branch holds the source statistics; the engine's copy would fight it."""
    trainer = tlkit.Trainer(tiny_task, adapt=["dsbn", "dann"], epochs=1, **fast)
    trainer.fit()
    assert trainer.config.domain_bn == "separate" and trainer.domain_stats is None
    assert tlkit.Trainer(tiny_task, adapt="dann", epochs=1, **fast).fit().config  # and DANN:
    plain = tlkit.Trainer(tiny_task, adapt="dann", epochs=1, **fast)
    plain.fit()
    assert plain.domain_stats is not None


def test_ema_evaluates_the_source_with_the_source_statistics(tiny_task, fast, monkeypatch):
    from tlkit.engine import epoch_eval

    seen = []
    original = epoch_eval.predict

    def spy(model, batches, **kw):
        bn = first_batchnorm(model)
        seen.append((forward_domain(), bn.running_mean.clone()))
        return original(model, batches, **kw)

    monkeypatch.setattr(epoch_eval, "predict", spy)
    trainer = tlkit.Trainer(tiny_task, adapt="dann", epochs=1, ema=0.9, **fast)
    trainer.fit()
    by_domain = dict(seen[-2:])  # the last epoch's source and target evaluations
    ema_bn = first_batchnorm(trainer.ema.module)
    assert torch.allclose(by_domain["target"], ema_bn.running_mean)  # the EMA's own
    assert not torch.allclose(by_domain["source"], by_domain["target"])  # the source copy
    index = [m for m in trainer.model.modules() if isinstance(m, nn.BatchNorm2d)].index(
        first_batchnorm(trainer.model)
    )
    assert torch.allclose(by_domain["source"], trainer.domain_stats.source[index]["running_mean"])


def test_an_interrupted_source_pass_leaves_the_target_statistics(tiny_task):
    from tlkit.engine.domain_stats import DomainStatistics
    from tlkit.step import domain_context

    bn = nn.BatchNorm1d(3)
    stats = DomainStatistics(nn.Sequential(bn))
    with domain_context("target"):
        bn(torch.randn(8, 3) - 5)
    target_mean = bn.running_mean.clone()
    with pytest.raises(ValueError), domain_context("source"):
        bn(torch.randn(1, 3))  # training-mode BatchNorm refuses a batch of one
    stats.remove()
    assert torch.equal(bn.running_mean, target_mean)


def test_colour_augmentation_is_for_the_source_only(tiny_task, fast):
    from tlkit.datasets import colour_augment, weak_augment

    trainer = tlkit.Trainer(tiny_task, adapt="dann", augment="colour", epochs=1, **fast)
    trainer.fit()
    assert trainer.feeder.source.augment is colour_augment
    assert trainer.feeder.target.weak_view is weak_augment  # FixMatch's weak view: a shift


def test_a_checkpoint_without_source_statistics_is_refused_by_name(tiny_task, fast, tmp_path):
    """A run with separate domain passes resumes both domains' statistics; a checkpoint that
    lacks the source's (an older tlkit's) is refused, not resumed with made-up statistics."""
    tlkit.fit(tiny_task, adapt="dann", epochs=1, checkpoint_dir=tmp_path / "a", **fast)
    ckpt = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert ckpt["source_bn_stats"] is not None
    del ckpt["source_bn_stats"]
    torch.save(ckpt, tmp_path / "old.pt")
    trainer = tlkit.Trainer(tiny_task, adapt="dann", epochs=1, **fast)
    with pytest.raises(CheckpointError, match="old.pt.*no source-domain BatchNorm statistics"):
        trainer.fit(resume=tmp_path / "old.pt")
