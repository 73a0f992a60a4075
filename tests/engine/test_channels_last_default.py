"""Channels-last by default for images, on the CPU too; nothing changes for other inputs."""

from __future__ import annotations

import pytest
import torch

import tlkit
from tlkit.engine.device import use_channels_last

FAST = dict(epochs=1, max_steps=2, batch_size=16, lr=3e-3, progress=False, seed=0, device="cpu")


class Layouts:
    """Observer: the run's channels-last choice, and the layout the backbone's inputs arrive in."""

    def __init__(self) -> None:
        self.choice: bool | None = None
        self.inputs_nhwc: list[bool] = []

    @tlkit.hookimpl
    def tlkit_on_fit_start(self, trainer) -> None:
        self.choice = trainer.channels_last
        trainer.model.backbone.register_forward_pre_hook(self._record)

    def _record(self, module, args) -> None:
        x = args[0]
        if x.ndim == 4:
            self.inputs_nhwc.append(x.is_contiguous(memory_format=torch.channels_last))


def _conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.ndim == 4 and p.shape[-1] > 1]


@pytest.mark.parametrize(
    ("option", "modality", "expected"),
    [
        ("auto", "image", True),
        ("auto", "tensor", False),
        (False, "image", False),
        (True, "image", True),
    ],
)
def test_channels_last_choice(option, modality, expected):
    assert use_channels_last(option, modality) is expected


def test_image_run_on_cpu_is_channels_last_by_default(tiny_task):
    seen = Layouts()
    run = tlkit.fit(tiny_task, "small_cnn", mode="full", observers=[seen], **FAST)
    assert seen.choice is True
    assert seen.inputs_nhwc and all(seen.inputs_nhwc)
    weights = _conv_weights(run.model)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


def test_channels_last_false_keeps_nchw(tiny_task):
    seen = Layouts()
    run = tlkit.fit(
        tiny_task, "small_cnn", mode="full", channels_last=False, observers=[seen], **FAST
    )
    assert seen.choice is False
    assert seen.inputs_nhwc and not any(seen.inputs_nhwc)
    assert all(w.is_contiguous() for w in _conv_weights(run.model))


@pytest.mark.parametrize(("task", "backbone"), [("wine", "mlp"), ("docstrings", "text_bag")])
def test_non_image_runs_are_not_channels_last(task, backbone):
    seen = Layouts()
    tlkit.fit(tlkit.datasets.load(task), backbone, mode="full", observers=[seen], **FAST)
    assert seen.choice is False
    assert seen.inputs_nhwc == []
