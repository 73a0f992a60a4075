"""PixelDA on a colour-randomised source (``augment="colour"``): the classifier trains on the
generator's renderings of the colour-augmented batch, not on that batch itself."""

from __future__ import annotations

import pytest
import torch

import tlkit

SMALL = {"width": 4, "blocks": 1}


class SeenBatches:
    """Records the source images each step trained the classifier on (``step.x`` after every
    ``tlkit_transform_source``)."""

    def __init__(self) -> None:
        self.x: list[torch.Tensor] = []

    @tlkit.hookimpl
    def tlkit_on_step_end(self, trainer, step):
        self.x.append(step.x.detach().clone())


def _seen(task, fast, **options) -> list[torch.Tensor]:
    seen = SeenBatches()
    tlkit.fit(task, epochs=1, max_steps=6, augment="colour", observers=[seen], **fast, **options)
    return seen.x


@pytest.fixture
def colour_only_and_pixelda(tiny_task, fast):
    colour = _seen(tiny_task, fast)
    pixelda = _seen(tiny_task, fast, adapt=("pixelda", SMALL))
    return colour, pixelda


def test_both_runs_draw_the_same_colour_augmented_batches_first(colour_only_and_pixelda):
    colour, pixelda = colour_only_and_pixelda
    assert len(colour) == len(pixelda) == 6
    # the residual generator starts as the identity, so step 0 shows the shared input: the
    # same source samples, painted in the same random colours in both runs
    assert torch.equal(colour[0], pixelda[0])
    assert colour[0].std(0).mean() > 0.05  # and the colours do vary from image to image


def test_pixelda_trains_the_classifier_on_generated_not_augmented_images(colour_only_and_pixelda):
    colour, pixelda = colour_only_and_pixelda
    for step in range(1, 6):
        assert colour[step].shape == pixelda[step].shape
        moved = (colour[step] - pixelda[step]).abs().mean()
        assert moved > 1e-3, f"step {step}: PixelDA's batch equals the colour-augmented one"
