"""PixelDA's own GAN optimisers (gan_lr, betas, d_steps); without them, the run's optimisers."""

from __future__ import annotations

import pytest
from tlkit_strategies.adapt.pixelda import PixelDA

import tlkit

SMALL = {"width": 4, "blocks": 0}


def _owned(trainer):
    return {o.name: o for o in trainer.optimisation.owned}


def test_gan_lr_gives_generator_and_discriminator_their_own_adam(tiny_task, fast):
    adapt = ("pixelda", {**SMALL, "gan_lr": 1e-3, "betas": (0.5, 0.99), "d_steps": 2})
    trainer = tlkit.Trainer(tiny_task, epochs=1, max_steps=3, mode="full", adapt=adapt, **fast)
    trainer.fit()
    owned = _owned(trainer)
    g, d = owned["pixelda.generator"], owned["pixelda.discriminator"]
    assert (g.loss, g.steps, d.loss, d.steps) == ("main", 1, "adversary", 2)
    for o in (g, d):
        assert o.optimizer.param_groups[0]["lr"] == 1e-3
        assert o.optimizer.param_groups[0]["betas"] == (0.5, 0.99)
    first = next(iter(d.optimizer.state.values()))
    assert int(first["step"]) == 2 * 3  # two discriminator steps per training step
    main = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    modules = trainer.strategies["pixelda"].modules
    assert not any(id(p) in main for p in modules.parameters())
    assert trainer.adversary_optimizer is None


def test_by_default_pixelda_keeps_the_runs_optimisers(tiny_task, fast):
    trainer = tlkit.Trainer(tiny_task, epochs=1, max_steps=1, mode="full",
                            adapt=("pixelda", SMALL), **fast)  # fmt: skip
    trainer.fit()
    assert [o.name for o in trainer.optimisation.owned] == ["adversary"]  # the discriminator
    main = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    generator = trainer.strategies["pixelda"].modules.generator
    assert all(id(p) in main for p in generator.parameters())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"d_steps": 2}, r"d_steps=2 needs gan_lr="),
        ({"gan_lr": 1e-3, "betas": (0.5, 1.5)}, r"betas must be two numbers in \[0, 1\)"),
        ({"gan_lr": -1}, r"gan_lr must be a positive number"),
    ],
)
def test_bad_gan_options_are_explained(options, message):
    with pytest.raises(tlkit.StrategyOptionError, match=message):
        PixelDA(**options)
