"""What ``tlkit backbones`` prints: each backbone, whether it builds offline on this machine, and
where its weights come from (bundled, none, a cache, or a download; see
:mod:`tlkit.backbones.offline` for how downloads fail fast offline). Listing never touches the
network: it only looks for cached files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tlkit.backbones import TENSOR_BACKBONES, TORCHVISION_EXAMPLES
from tlkit.backbones.torchvision_models import cached_weights_path, default_weights


@dataclass(frozen=True)
class BackboneAvailability:
    """A backbone name, whether it builds offline now, and where its weights come from."""

    name: str
    offline: bool
    weights: str


def backbone_availability() -> list[BackboneAvailability]:
    """Every listed backbone (:func:`~tlkit.backbones.list_backbones`) with its offline status
    on this machine; torchvision names count as offline once their weights are cached."""
    out = [
        BackboneAvailability("efficientnet_lite0", True, "ImageNet, bundled with the package"),
        BackboneAvailability("small_cnn", True, "none (random init)"),
    ]
    for name in TORCHVISION_EXAMPLES:
        out.append(_torchvision(name))
    out.append(
        BackboneAvailability(
            "timm:<name>", False, "download from the Hugging Face Hub on first use, then cached"
        )
    )
    for name in TENSOR_BACKBONES:
        out.append(BackboneAvailability(name, True, "none (random init)"))
    out.append(BackboneAvailability("any name + weights=FILE", True, "your local checkpoint"))
    return out


def _torchvision(name: str) -> BackboneAvailability:
    weights = default_weights(name)
    if weights is None:
        return BackboneAvailability(name, True, "none (random init)")
    path = cached_weights_path(weights)
    if os.path.isfile(path):
        return BackboneAvailability(name, True, f"ImageNet, cached at {path}")
    return BackboneAvailability(name, False, f"ImageNet: download {weights.url} (to {path})")


def format_backbones(rows: list[BackboneAvailability] | None = None) -> str:
    """The ``tlkit backbones`` listing: name, ``offline yes/no``, where the weights come from."""
    rows = backbone_availability() if rows is None else rows
    width = max(len(r.name) for r in rows) + 2
    lines = [f"{'backbone':<{width}}offline  weights"]
    lines += [f"{r.name:<{width}}{'yes' if r.offline else 'no':<9}{r.weights}" for r in rows]
    lines.append(
        "Any torchvision classification model name also works (weights downloaded on first use); "
        "offline, set TLKIT_OFFLINE=1 to fail at once instead of trying the network."
    )
    return "\n".join(lines)

