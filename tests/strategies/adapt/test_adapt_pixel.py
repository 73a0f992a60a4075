"""Pixel-level adaptation: FDA's Fourier swap, PixelDA's GAN game, the source -> target grid."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from tlkit_strategies.adapt.fda import FDA, fourier_transfer, low_frequency_mask, match_target
from tlkit_strategies.adapt.pixelda import (
    Discriminator,
    Generator,
    PixelDA,
    content_similarity,
)
from torch import nn

import tlkit
from tlkit.datasets import Domain, DomainPair
from tlkit.plots import source_to_target_grid

matplotlib.use("Agg")


# -- FDA --------------------------------------------------------------------------------------
def test_low_frequency_mask_by_hand():
    mask = low_frequency_mask(16, 16, 0.1)  # b = floor(1.6) = 1: a 3 x 3 square around DC
    assert int(mask.sum()) == 9
    rows, cols = torch.nonzero(mask, as_tuple=True)
    assert set(rows.tolist()) == {0, 1, 15} and set(cols.tolist()) == {0, 1, 15}  # unshifted
    assert int(low_frequency_mask(16, 16, 0.0).sum()) == 1 and low_frequency_mask(16, 16, 0.0)[0, 0]
    assert int(low_frequency_mask(8, 12, 0.25).sum()) == 5 * 5  # b = floor(0.25 * 8) = 2


def test_fda_with_beta_zero_swaps_the_mean_colour():
    g = torch.Generator().manual_seed(0)
    src = 0.3 + 0.2 * torch.rand(2, 3, 8, 8, generator=g)  # positive sums: DC phase is 0
    tgt = 0.5 + 0.1 * torch.rand(2, 3, 8, 8, generator=g)
    out = fourier_transfer(src, tgt, beta=0.0)
    shift = tgt.mean((2, 3), keepdim=True) - src.mean((2, 3), keepdim=True)
    assert torch.allclose(out, src + shift, atol=1e-5)  # only the DC amplitude moved


def test_fda_takes_the_target_amplitude_and_keeps_the_source_phase():
    g = torch.Generator().manual_seed(1)
    src = 0.4 + 0.1 * torch.rand(1, 1, 16, 16, generator=g)
    tgt = 0.5 + 0.1 * torch.rand(1, 1, 16, 16, generator=g)
    out = fourier_transfer(src, tgt, beta=0.1)
    assert 0.0 < float(out.min()) and float(out.max()) < 1.0  # nothing was clipped
    mask = low_frequency_mask(16, 16, 0.1)
    f_out, f_src, f_tgt = (torch.fft.fft2(t) for t in (out, src, tgt))
    assert torch.allclose(f_out.abs()[..., mask], f_tgt.abs()[..., mask], atol=1e-4)
    assert torch.allclose(f_out.abs()[..., ~mask], f_src.abs()[..., ~mask], atol=1e-4)
    assert torch.allclose(f_out.angle()[..., mask], f_src.angle()[..., mask], atol=1e-4)


def test_match_target_channels_and_size():
    grey = torch.rand(2, 1, 8, 8)
    colour = torch.rand(2, 3, 16, 16)
    assert match_target(colour, grey).shape == (2, 1, 8, 8)
    assert torch.allclose(
        match_target(colour[..., :8, :8], grey), colour[..., :8, :8].mean(1, True)
    )
    assert match_target(grey, torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)


def test_fda_transforms_the_source_batch_in_a_run(tiny_task, fast):
    seen = {}

    class Watch:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer, step):
            seen["moved"] = float((step.x.mean((1, 2, 3)) - step.x_target.mean()).abs().mean())

    run = tlkit.fit(tiny_task, epochs=1, adapt=("fda", {"beta": 0.0}), observers=[Watch()], **fast)
    assert seen["moved"] < 0.05  # the source batch took the target's mean brightness (+0.2)
    assert math.isfinite(run.last["train_loss"])


@pytest.mark.parametrize("cls", [FDA, PixelDA])
def test_pixel_methods_refuse_non_image_data(cls):
    # the engine does not train on tensor domains yet, so the refusal is checked at set-up
    wine = tlkit.datasets.load("wine").source
    trainer = SimpleNamespace(data=SimpleNamespace(source=wine), target=wine.unlabelled())
    with pytest.raises(ValueError, match=f"{cls.name} is pixel-level adaptation.*tensor inputs"):
        cls().tlkit_setup(trainer=trainer)


def test_pixel_methods_refuse_grey_source_with_colour_target():
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 255, (32, 1, 8, 8), dtype=torch.uint8, generator=g)
    colour = torch.randint(0, 255, (32, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(32) % 2
    pair = DomainPair(Domain(grey, labels), target=Domain(colour, labels).unlabelled())
    with pytest.raises(tlkit.PluginError, match="1 channel and the target's 3.*RGB"):
        tlkit.fit(pair, backbone="small_cnn", epochs=1, adapt="fda", progress=False)


@pytest.mark.parametrize(
    ("cls", "options", "match"),
    [
        (FDA, {"beta": 0.6}, "beta"),
        (FDA, {"beta": -0.1}, "beta"),
        (PixelDA, {"adversarial": 0}, "adversarial"),
        (PixelDA, {"noise_dim": 1.5}, "noise_dim"),
        (PixelDA, {"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_options_are_explained(cls, options, match):
    with pytest.raises(ValueError, match=match):
        cls(**options)


# -- PixelDA ----------------------------------------------------------------------------------
def test_generator_and_discriminator_shapes():
    gen = Generator(3, (16, 16), noise_dim=10, width=8, blocks=1, residual=False)
    x = torch.rand(4, 3, 16, 16)
    z = torch.rand(4, 10) * 2 - 1
    out = gen(x, z)
    assert out.shape == x.shape and 0 <= out.min().item() and out.max().item() <= 1
    assert not torch.allclose(gen(x, z), gen(x, -z))  # the noise matters
    residual = Generator(3, (16, 16), noise_dim=10, width=8, blocks=1)
    assert torch.equal(residual(x, z), x)  # starts as the identity
    d = Discriminator(3, width=8)
    assert d(out).shape == (4,) and Discriminator.own_optimizer is True


def test_content_similarity_by_hand():
    x = torch.zeros(1, 1, 2, 2)
    assert content_similarity(x, x + 0.3).item() == pytest.approx(0.0, abs=1e-7)  # a shift is free
    g = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # d = (-1, 0, 0, 0): mean(d^2) - mean(d)^2
    assert content_similarity(x, g).item() == pytest.approx(1 / 4 - 1 / 16)


class ConstantD(nn.Module):
    """A discriminator that always answers logit 0 (probability 1/2)."""

    def forward(self, x):
        return x.flatten(1).sum(1) * 0.0


def pixelda_with(d, adversarial=0.5):
    p = PixelDA(adversarial=adversarial, source_weight=0.0, noise_dim=0, width=4, blocks=0)
    gen = Generator(1, (4, 4), noise_dim=0, width=4, blocks=0)
    p.modules = SimpleNamespace(generator=gen, discriminator=d)
    return p


def test_pixelda_losses_by_hand():
    p = pixelda_with(ConstantD())
    x = torch.rand(3, 1, 4, 4)
    logged = {}
    step = SimpleNamespace(
        index=0,
        x=x,
        x_target=torch.rand(5, 1, 4, 4),
        generator=None,
        log=lambda k, v, weight=1.0: logged.__setitem__(k, v),
    )
    fake = p.tlkit_transform_source(step=step)
    assert fake.shape == x.shape
    terms = p.tlkit_extra_losses(step=step)
    # BCE(logit 0, 1) = ln 2, times the adversarial weight
    assert terms["pixelda_generator"].item() == pytest.approx(0.5 * math.log(2))
    adv = p.tlkit_adversary_losses(step=step)
    # BCE over 5 real (label 1) and 3 generated (label 0) images, all at logit 0: ln 2
    assert adv["pixelda_discriminator"].item() == pytest.approx(math.log(2))
    assert logged["pixelda_d_accuracy"].item() == pytest.approx(3 / 8)  # "> 0" calls all fake


def test_pixelda_generator_learns_from_the_classifier_and_the_discriminator_apart(
    tiny_task, fast, tmp_path
):
    seen = {}

    class Inspect:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer, step):
            mods = trainer.strategies["pixelda"].modules
            main = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
            second = {id(p) for g in trainer.adversary_optimizer.param_groups for p in g["params"]}
            seen["g_main"] = all(id(p) in main for p in mods.generator.parameters())
            seen["d_second"] = all(id(p) in second for p in mods.discriminator.parameters())
            seen["d_main"] = any(id(p) in main for p in mods.discriminator.parameters())

    opts = dict(epochs=2, adapt=("pixelda", {"width": 8, "blocks": 1}), **fast)
    whole = tlkit.fit(tiny_task, observers=[Inspect()], checkpoint_dir=str(tmp_path / "a"), **opts)
    assert seen == {"g_main": True, "d_second": True, "d_main": False}
    row = whole.last
    for term in ("pixelda_generator", "pixelda_source", "pixelda_discriminator"):
        assert math.isfinite(row[term]) and row[term] > 0
    expected = row["supervised"] + row["pixelda_generator"] + row["pixelda_source"]
    assert row["train_loss"] == pytest.approx(expected, rel=1e-4)
    tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), max_steps=7, **opts)
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), resume=True, **opts)
    assert resumed.history == whole.history


# -- the grid ---------------------------------------------------------------------------------
def test_grid_from_a_trainer_a_strategy_and_a_function(tiny_task, fast):
    trainer = tlkit.Trainer(
        tiny_task, epochs=1, max_steps=2, adapt=("pixelda", {"width": 4, "blocks": 0}), **fast
    )
    trainer.fit()
    fig = source_to_target_grid(trainer, tiny_task.source, tiny_task.target, n=5)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 3 * 5  # source, generated, real target
    assert [fig.axes[i].get_ylabel() for i in (0, 5, 10)] == [
        "source",
        "target style",
        "real target",
    ]
    fig = source_to_target_grid(trainer.strategies["pixelda"], tiny_task.source.images, n=4)
    assert len(fig.axes) == 2 * 4
    fig = source_to_target_grid(lambda x: 1 - x, tiny_task.source, n=3)
    shown = fig.axes[3].images[0].get_array()
    first = fig.axes[0].images[0].get_array()
    assert torch.allclose(torch.as_tensor(shown), 1 - torch.as_tensor(first))
    fda = FDA(beta=0.0)
    fig = source_to_target_grid(fda, tiny_task.source, tiny_task.target, n=2)
    assert len(fig.axes) == 3 * 2
    with pytest.raises(ValueError, match="target="):
        source_to_target_grid(fda, tiny_task.source, n=2)
    matplotlib.pyplot.close("all")


def test_grid_refuses_a_trainer_without_a_pixel_method(tiny_task, fast):
    trainer = tlkit.Trainer(tiny_task, epochs=1, adapt="bnm", **fast)
    with pytest.raises(ValueError, match="offer no preview"):
        source_to_target_grid(trainer, tiny_task.source)


def test_generated_images_feed_the_classifier_with_gradients():
    gen = Generator(1, (4, 4), noise_dim=2, width=4, blocks=1, residual=False)
    x = torch.rand(2, 1, 4, 4)
    out = gen(x, torch.tensor([[0.5, -1.0], [1.0, 0.2]]))
    F.mse_loss(out, torch.ones_like(out)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())
