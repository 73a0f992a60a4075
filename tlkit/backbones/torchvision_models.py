"""torchvision classification models as backbones, with their ``DEFAULT`` ImageNet weights.

Weights come from the torch hub cache (``torch.hub.get_dir()/checkpoints/<file>``, where
torchvision itself puts them) and are loaded with ``weights_only=True``; when the file is not
there, it is downloaded once (:func:`~tlkit.backbones.offline.download_once`: no retries, no
attempt when offline). Without the file, :class:`BackboneError` gives the exact path and URL -- a
pretrained request never silently becomes a random init.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights

from tlkit.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneError,
    auto_groups,
)
from tlkit.backbones.offline import download_once
from tlkit.backbones.wrapping import dummy_forward

# Old DenseNet checkpoints name layers 'norm.1'; torchvision renames them on load, as we do.
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
# Models whose builders change their architecture when given weights (torchvision does the same).
_AUX_MODELS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    """Every torchvision classification model name (not detection, video, quantized...)."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def default_weights(name: str) -> Any | None:
    """The model's ``DEFAULT`` weights enum member, or ``None`` when it has none."""
    try:
        return get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return None


def cached_weights_path(weights: Any) -> str:
    """Where torch hub caches ``weights``: ``<torch.hub.get_dir()>/checkpoints/<file name>``."""
    filename = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def load_pretrained_state_dict(name: str, weights: Any) -> dict[str, torch.Tensor]:
    """The weights' state dict from the hub cache, else downloaded; never a silent fallback."""
    path = cached_weights_path(weights)
    if os.path.isfile(path):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BackboneError(
                f"the cached weights for {name!r} at {path!r} are unreadable ({type(exc).__name__}:"
                f" {str(exc).splitlines()[0][:200]}). Delete the file and download it again from "
                f"{weights.url}, or pass pretrained=False to train from a random init."
            ) from exc
    else:
        state = download_once(
            f"pretrained weights for {name!r}",
            weights.url,
            path,
            lambda: weights.get_state_dict(progress=True, check_hash=True, weights_only=True),
        )
    return {_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}


def strip_classifier(model: nn.Module) -> int | None:
    """Replace the final linear classifier by Identity; return its input size if known.

    ``fc``/``head`` Linear layers become Identity; in a Sequential ``classifier``/``heads`` only
    the last Linear does, so pretrained penultimate layers (MobileNetV3, VGG) stay. A classifier
    without a Linear (SqueezeNet's 1x1 conv) becomes global average pooling.
    """
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential):
            linear = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
            if linear:
                in_features = head[linear[-1]].in_features
                head[linear[-1]] = nn.Identity()
                return in_features
            setattr(model, attr, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
            return None
    return None


def torchvision_backbone(
    name: str, *, pretrained: bool | str = "auto", input_size: int | None = None, **kwargs: Any
) -> Backbone:
    """A torchvision model without its classifier; ``pretrained="auto"`` loads DEFAULT weights."""
    pretrained = pretrained in (True, "auto")
    weights = default_weights(name)
    if pretrained and weights is None:
        raise BackboneError(
            f"torchvision has no pretrained weights for {name!r}; pass pretrained=False."
        )
    if name in _AUX_MODELS:  # the pretrained checkpoints include the auxiliary heads
        kwargs.setdefault("transform_input", pretrained)
        kwargs["aux_logits"] = pretrained
        kwargs.setdefault("init_weights", not pretrained)
    try:
        model = get_model(name, weights=None, **kwargs)
    except TypeError as exc:
        raise BackboneError(f"cannot build torchvision model {name!r}: {exc}") from exc

    if pretrained:
        state = load_pretrained_state_dict(name, weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise BackboneError(
                f"the weights at {cached_weights_path(weights)!r} do not fit {name!r}: "
                f"{str(exc)[:500]}. Delete the file so it is downloaded again, or pass "
                "pretrained=False."
            ) from exc
    for aux in _AUX_MODELS.get(name, ()):  # a backbone returns one tensor, also in train mode
        model.aux_logits = False
        setattr(model, aux, None)

    transform = getattr(weights, "transforms", None)
    preset = getattr(transform, "keywords", {}) if transform is not None else {}
    side = input_size or int(preset.get("crop_size", 224))
    num_features = strip_classifier(model)
    if num_features is None:
        num_features = dummy_forward(model, side).shape[1]
    return Backbone(
        model,
        num_features,
        name=name,
        input_size=side,
        mean=preset.get("mean", IMAGENET_MEAN),
        std=preset.get("std", IMAGENET_STD),
        groups=auto_groups(model),
        pretrained=pretrained,
    )
