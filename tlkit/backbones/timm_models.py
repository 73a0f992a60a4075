"""timm models as backbones (``"timm:<name>"``), with timm's pretrained weights.

timm downloads weights from the Hugging Face Hub (or its URL) into the HF cache. Offline, with
the weights not cached, :class:`BackboneError` says so; set ``HF_HUB_OFFLINE=1`` to fail at once
instead of after the hub client's retries.
"""

from __future__ import annotations

import difflib
from typing import Any

import timm

from tlkit.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneError, auto_groups


def timm_backbone(
    name: str, *, pretrained: bool | str = "auto", input_size: int | None = None, **kwargs: Any
) -> Backbone:
    """``timm.create_model(name, num_classes=0)``: pooled features, config from pretrained_cfg."""
    pretrained = pretrained in (True, "auto")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr('timm:' + c) for c in close)}?" if close else ""
        raise BackboneError(
            f"unknown timm model {name!r}.{hint} See timm.list_models() for the names."
        )
    kwargs["num_classes"] = 0
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError, ImportError, ConnectionError) as exc:
        if not pretrained:
            raise BackboneError(f"cannot build timm model {name!r}: {exc}") from exc
        raise BackboneError(
            f"pretrained weights for timm model {name!r} are not available offline: they are "
            f"not in the Hugging Face cache (HF_HOME / HF_HUB_CACHE) and downloading them failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
            "Run once with network to cache them (with HF_HUB_OFFLINE=1 set later, timm reads "
            "the cache without retrying the network), or pass pretrained=False to train from a "
            "random init. 'efficientnet_lite0' has ImageNet weights offline."
        ) from exc
    except TypeError as exc:
        raise BackboneError(f"cannot build timm model {name!r}: {exc}") from exc

    cfg = getattr(model, "pretrained_cfg", None) or {}
    side = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return Backbone(
        model,
        num_features,
        name=f"timm:{name}",
        input_size=side,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        groups=auto_groups(model),
        pretrained=pretrained,
    )
