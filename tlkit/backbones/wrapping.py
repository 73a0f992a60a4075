"""Wrapping a user's ``nn.Module`` as a :class:`Backbone`, for images and for tensor rows.

For images the feature size is found with a dummy image batch. On a tensor domain (float feature
rows, int64 token ids) ``create_backbone`` passes the data's sizes (``in_features``,
``vocab_size``, ``padding_id``, ``tokenizer``): a module never receives them -- it was built by
its author -- and they only tell how to probe it (:func:`wrap_for_data`): a dummy batch of rows
or ids gives the feature size, so ``tlkit.fit(text_task, backbone=MyLSTM())`` works on a module
that returns ``(B, D)`` and has no ``num_features`` attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tlkit.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneError

#: What a tensor domain tells a backbone (``Domain.backbone_kwargs``): the data's sizes.
DATA_KWARGS = ("in_features", "vocab_size", "padding_id", "tokenizer")


def wrap_for_data(
    module: nn.Module, data: Mapping[str, Any], *, pretrained: bool = False, **kwargs: Any
) -> Backbone:
    """Wrap a module that reads a tensor domain's rows: ``data`` holds the domain's
    ``backbone_kwargs()``; the feature size comes from ``num_features`` (argument or
    attribute) or a dummy batch of that data's kind."""
    from tlkit.backbones.text import attach_tokenizer

    num_features = kwargs.pop("num_features", None)
    kwargs.pop("modality", None)  # rows or ids of a tensor domain: "tensor" whatever was said
    declared = getattr(module, "num_features", None)
    if num_features is None and isinstance(declared, int) and declared > 0:
        num_features = declared
    if num_features is None:
        out = _dummy_rows(module, data)
        if out.ndim != 2:
            raise BackboneError(
                f"the module maps a dummy batch of this data to shape {tuple(out.shape)}; a "
                "backbone for feature rows or token ids must return features (B, D)."
            )
        num_features = int(out.shape[1])
    backbone = wrap_module(
        module, num_features=num_features, pretrained=pretrained, modality="tensor", **kwargs
    )
    if "vocab_size" in data:
        backbone.build_kwargs["vocab_size"] = data["vocab_size"]
    attach_tokenizer(backbone, data.get("tokenizer"))
    return backbone


def _dummy_rows(module: nn.Module, data: Mapping[str, Any], batch: int = 2) -> torch.Tensor:
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if "in_features" in data:
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        x = torch.zeros(batch, int(data["in_features"]), device=device, dtype=dtype)
        what = f"feature rows ({batch}, {int(data['in_features'])})"
    else:  # token ids: one real id then padding, the shortest text there is
        x = torch.zeros(batch, 8, dtype=torch.long, device=device)
        x[:, 0] = 1 if int(data.get("padding_id", 0)) != 1 else 2
        what = f"token ids ({batch}, 8)"
    return _probe(
        module,
        x,
        what=what,
        fix="Give the module a num_features attribute (or wrap it: "
        "tlkit.backbones.Backbone(module, num_features, modality='tensor')).",
        returns="features (B, D) (an LSTM returns (output, state): take what you need in forward)",
    )


def _probe(
    module: nn.Module, x: torch.Tensor, *, what: str, fix: str, returns: str
) -> torch.Tensor:
    """``module(x)`` in eval mode without gradients (its mode is restored after): the output
    that tells a module's feature size. ``what`` names the batch, ``fix`` the way out when the
    module cannot read it, ``returns`` what a backbone must return."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:
        raise BackboneError(
            f"could not run a dummy batch of {what} through the module to infer its feature "
            f"size: {type(exc).__name__}: {exc}. {fix}"
        ) from exc
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise BackboneError(
            f"the module returned {type(out).__name__}, not a tensor; a backbone must return "
            f"{returns}."
        )
    return out


def wrap_module(
    module: nn.Module,
    *,
    input_size: int | None = None,
    num_features: int | None = None,
    name: str = "custom",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    groups: Sequence[nn.Module] | None = None,
    pretrained: bool = False,
    modality: str | None = None,
) -> Backbone:
    """Wrap a module as a Backbone, inferring the feature size from a dummy batch.

    A module whose output is a feature map ``(B, C, H, W)`` gets global average pooling and
    flattening appended, so any CNN trunk works. Pass ``num_features`` to skip the dummy
    forward (the module must then already return ``(B, D)``).

    Any module with a ``num_features`` attribute works: with ``modality = "tensor"`` (an
    attribute of the module, or the argument) it reads non-image inputs and is trusted to
    return ``(B, num_features)``; otherwise a dummy image batch is tried, and a module that
    cannot read images (or returns something else) is taken as a tensor backbone.
    """
    if modality not in (None, "image", "tensor"):
        raise BackboneError(f"modality must be 'image' or 'tensor', got {modality!r}")
    declared = getattr(module, "num_features", None)
    modality = modality or getattr(module, "modality", None)
    if num_features is None and isinstance(declared, int) and declared > 0:
        if modality == "tensor":
            num_features = declared
        elif modality is None:
            try:
                out = dummy_forward(module, input_size or 32)
            except BackboneError:
                out = None
            if out is None:  # cannot read images: a backbone for other inputs
                modality, num_features = "tensor", declared
            elif not (out.ndim in (2, 4) and out.shape[1] == declared):
                raise BackboneError(
                    f"the module declares num_features={declared} but maps an image batch "
                    f"(2, 3, {input_size or 32}, {input_size or 32}) to {tuple(out.shape)}. A "
                    "classifier still has its head (timm: create_model(name, num_classes=0)); "
                    "a module for non-image inputs should set module.modality = 'tensor'."
                )
            elif out.ndim == 2:
                num_features = declared
    if modality == "tensor" and num_features is None:
        raise BackboneError(
            "a tensor-modality module needs its feature size: give it a num_features attribute "
            "or pass num_features=."
        )
    body = module
    if num_features is None:
        side = input_size or 32
        out = dummy_forward(module, side)
        if out.ndim == 4:
            body = nn.Sequential(module, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            num_features = out.shape[1]
        elif out.ndim == 2:
            num_features = out.shape[1]
        else:
            raise BackboneError(
                f"the module maps a (2, 3, {side}, {side}) batch to shape {tuple(out.shape)}; "
                "a backbone must return features (B, D) or feature maps (B, C, H, W). Wrap it "
                "in a module that pools/flattens its output, or set module.modality = 'tensor' "
                "if it reads other inputs."
            )
    return Backbone(
        body,
        num_features,
        name=name,
        input_size=input_size if modality != "tensor" else None,
        mean=mean,
        std=std,
        groups=groups,
        pretrained=pretrained,
        modality=modality or "image",
    )


def dummy_forward(module: nn.Module, side: int, batch: int = 2) -> torch.Tensor:
    """Run a zero batch ``(batch, 3, side, side)`` in eval mode without gradients."""
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(batch, 3, side, side, device=device, dtype=dtype)
    return _probe(
        module,
        x,
        what=f"images ({batch}, 3, {side}, {side})",
        fix="Pass input_size= (the image side it expects) or num_features=.",
        returns="features (B, D) or feature maps (B, C, H, W)",
    )
