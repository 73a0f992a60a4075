"""Probing a user's module for its feature size: images and tensor rows go through one probe,
so a module that cannot read the dummy batch, or returns no tensor, gets the same explanation
(what was tried, what to do) and keeps its training mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlkit.backbones.base import BackboneError
from tlkit.backbones.wrapping import dummy_forward, wrap_for_data


class Fails(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        raise ValueError("no thanks")


class ReturnsTuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return x, x


def probes():
    return {
        "images": lambda m: dummy_forward(m, 8),
        "rows": lambda m: wrap_for_data(m, {"in_features": 4}),
    }


@pytest.mark.parametrize("kind", ["images", "rows"])
def test_a_failing_module_is_told_what_was_tried_and_keeps_its_mode(kind):
    module = Fails().train()
    with pytest.raises(BackboneError) as info:
        probes()[kind](module)
    message = str(info.value)
    assert "could not run a dummy batch of" in message
    assert "through the module to infer its feature size: ValueError: no thanks" in message
    assert "num_features" in message  # the way out
    assert module.training


@pytest.mark.parametrize("kind", ["images", "rows"])
def test_a_module_returning_no_tensor_is_explained(kind):
    module = ReturnsTuple().eval()
    with pytest.raises(BackboneError, match="the module returned tuple, not a tensor; a backbone"):
        probes()[kind](module)
    assert not module.training


def test_the_image_probe_names_the_batch_it_tried():
    with pytest.raises(BackboneError, match=r"a dummy batch of images \(2, 3, 8, 8\)"):
        dummy_forward(Fails(), 8)


def test_the_probe_still_gives_the_output():
    out = dummy_forward(nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(1)), 8)
    assert out.shape == (2, 5 * 6 * 6)
    assert isinstance(out, torch.Tensor)
