"""timm models as backbones (``"timm:<name>"``), with timm's pretrained weights.

timm downloads weights from the Hugging Face Hub (or its URL) into the HF cache. Cached weights
are read from that file without touching the network; otherwise the download is tried once, and
not at all offline (``TLKIT_OFFLINE=1``, ``HF_HUB_OFFLINE=1``, or the hub not answering within
seconds): :class:`BackboneError` then names the download (see :mod:`tlkit.backbones.offline`).
"""

from __future__ import annotations

import difflib
from typing import Any

import timm

from tlkit.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneError, auto_groups
from tlkit.backbones.offline import download_once, timm_cached_file, timm_source


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
    if pretrained:
        model = _pretrained(name, kwargs)
    else:
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except (OSError, RuntimeError, ValueError, ImportError, TypeError) as exc:
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


def _pretrained(name: str, kwargs: dict[str, Any]) -> Any:
    """The model with its default pretrained weights: from a cached file without touching the
    network, else downloaded once (no retries, no attempt offline)."""
    cached = timm_cached_file(name)
    if cached is not None:
        try:
            return timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise BackboneError(
                f"the cached weights of timm model {name!r} at {cached!r} do not load "
                f"({type(exc).__name__}: {str(exc)[:200]}). Delete the file so it is downloaded "
                "again, or pass pretrained=False."
            ) from exc
    url, host, cache = timm_source(name)
    if not url:
        raise BackboneError(f"timm has no pretrained weights for {name!r}; pass pretrained=False.")

    def download() -> Any:
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except TypeError as exc:
            raise BackboneError(f"cannot build timm model {name!r}: {exc}") from exc

    return download_once(
        f"pretrained weights for timm model {name!r}", url, cache, download, host=host
    )
