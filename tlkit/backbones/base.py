"""The pieces every backbone is wrapped in: Backbone, heads, and TransferModel.

A :class:`Backbone` turns normalised images ``(B, 3, S, S)`` into features ``(B, D)``. It knows the
input size and normalisation its weights expect, and how its layers group from early (generic) to
late (task-specific), which is what discriminative learning rates and gradual unfreezing need.
A backbone with ``modality = "tensor"`` reads other inputs (feature vectors, token ids) instead.

A :class:`TransferModel` is ``prepare -> backbone -> head``: ``prepare`` takes images as the
datasets hold them (float in [0, 1], 1 or 3 channels, any size) and converts them to what the
backbone expects, so users and the engine call ``model(images)`` on raw data alike; tensor
inputs pass through unchanged (float features cast to the model's dtype).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .target_scale import TargetScale

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(ValueError):
    """A backbone could not be built or loaded; the message says why and what to do."""


class Backbone(nn.Module):
    """A feature extractor with the facts the engine needs about it.

    Args:
        body: module mapping ``(B, 3, S, S)`` normalised images to ``(B, num_features)``.
        num_features: the feature size ``D``.
        name: the factory name (kept in checkpoints to rebuild the model).
        input_size: the side ``S`` images are resized to (``None`` keeps their size).
        mean, std: per-channel normalisation the weights were trained with.
        groups: the body's sub-modules from early to late layers; parameters not in any group
            are put in the last one. Defaults to one group (the whole body).
        pretrained: whether ``body`` holds pretrained weights.
        modality: ``"image"`` (the default) or ``"tensor"`` for any other per-sample inputs;
            ``TransferModel.prepare`` leaves tensor inputs as they are.
    """

    def __init__(
        self,
        body: nn.Module,
        num_features: int,
        *,
        name: str = "custom",
        input_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        groups: Sequence[nn.Module] | None = None,
        pretrained: bool = False,
        modality: str = "image",
    ) -> None:
        super().__init__()
        if modality not in ("image", "tensor"):
            raise ValueError(f"modality must be 'image' or 'tensor', got {modality!r}")
        self.body = body
        self.num_features = int(num_features)
        self.name = name
        self.input_size = input_size
        self.pretrained = pretrained
        self.modality = modality
        #: keyword arguments that rebuild this architecture with its factory (checkpoints)
        self.build_kwargs: dict = {}
        #: the :class:`tlkit.Tokenizer` that made a text backbone's ids (None otherwise)
        self.tokenizer = None
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self._groups = list(groups) if groups else [body]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped from early to late layers; every parameter appears exactly once."""
        seen: set[int] = set()
        groups: list[list[nn.Parameter]] = []
        for module in self._groups:
            params = [p for p in module.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            groups.append(params)
        rest = [p for p in self.body.parameters() if id(p) not in seen]
        if rest:
            groups[-1].extend(rest)
        return [g for g in groups if g]


class ClassificationHead(nn.Module):
    """Dropout + linear layer: features ``(B, D)`` -> logits ``(B, num_classes)``."""

    def __init__(self, num_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_classes)
        self.out_features = num_classes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))


class RegressionHead(nn.Module):
    """A small MLP: features ``(B, D)`` -> predictions ``(B, out_features)`` in the target's
    units; the MLP predicts standardised values that :class:`TargetScale` maps back."""

    def __init__(self, num_features: int, out_features: int = 1, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features)
        )
        self.scale = TargetScale(out_features)
        self.out_features = out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale(self.net(features))


def make_head(task: str, num_features: int, out_features: int, dropout: float = 0.0) -> nn.Module:
    if task == "regression":
        return RegressionHead(num_features, out_features)
    return ClassificationHead(num_features, out_features, dropout)


class TransferModel(nn.Module):
    """``prepare -> backbone -> head``; call it on images in [0, 1] of any size and channel count."""

    def __init__(self, backbone: Backbone, head: nn.Module, task: str = "classification") -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.task = task

    @property
    def out_features(self) -> int:
        return self.head.out_features

    @property
    def modality(self) -> str:
        """What the model reads: ``"image"`` or ``"tensor"`` (its backbone's modality)."""
        return getattr(self.backbone, "modality", "image")

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Float [0, 1] or uint8 images ``(B, 1|3, H, W)`` -> normalised ``(B, 3, S, S)``.

        Tensor-modality models get their inputs back unchanged (float features only cast to
        the model's floating dtype; token ids stay int64).
        """
        if self.modality == "tensor":
            if images.is_floating_point() and images.dtype != self.backbone.mean.dtype:
                images = images.to(self.backbone.mean.dtype)
            return images
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"expected images of shape (B, 1 or 3, H, W), got {tuple(images.shape)}"
            )
        if images.dtype != self.backbone.mean.dtype:  # float64 arrays, half inputs...
            images = images.to(self.backbone.mean.dtype)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        size = self.backbone.input_size
        if size is not None and images.shape[-2:] != (size, size):
            shrink = images.shape[-1] > size or images.shape[-2] > size
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
            )
        return (images - self.backbone.mean) / self.backbone.std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))
