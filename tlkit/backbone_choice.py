"""Which backbone reads a Domain: the default per kind of input, and an early refusal.

Features that train models for the user (cross-validation, active learning, backbone ranking)
pick a backbone that can read the data when none is named, and refuse a named one that cannot
*before* anything is trained: an image CNN given token ids, an MLP given images. It imports
only the data and backbone layers, so the engine may use it too.
"""

from __future__ import annotations

from typing import Any

from tlkit.backbones import TENSOR_BACKBONES, TOKEN_BACKBONES
from tlkit.datasets.domain import DataError, Domain

#: The backbone a data-quality feature trains when none is named: small and fast for each kind.
DEFAULT_BACKBONES = {"image": "small_cnn", "features": "mlp", "tokens": "text_bag"}
_TOKEN_BACKBONES = TOKEN_BACKBONES


def input_kind(domain: Domain) -> str:
    """``"image"`` (in memory or files), ``"features"`` (float rows) or ``"tokens"`` (int ids)."""
    if domain.modality == "image":
        return "image"
    return "features" if domain.backing.tensor.is_floating_point() else "tokens"


def default_backbone(domain: Domain) -> str:
    """The backbone a feature trains on ``domain`` when the caller names none."""
    return DEFAULT_BACKBONES[input_kind(domain)]


def check_backbone(domain: Domain, backbone: Any, what: str) -> None:
    """Refuse a backbone *name* that cannot read ``domain`` (an image CNN on token ids, an MLP
    on images...) before anything is trained; modules and checkpoints are checked when built."""
    if not isinstance(backbone, str):
        return
    kind = input_kind(domain)
    name = backbone.strip().lower()
    if kind == "image":
        ok = name not in TENSOR_BACKBONES
    elif kind == "features":
        ok = name == "mlp"
    else:
        ok = name in _TOKEN_BACKBONES
    if not ok:
        readers = {
            "image": "an image backbone ('small_cnn', 'efficientnet_lite0', torchvision names)",
            "features": "'mlp'",
            "tokens": "'text_bag', 'text_cnn', 'text_lstm' or 'text_gru'",
        }[kind]
        holds = {
            "image": "images",
            "features": "float feature rows",
            "tokens": "token ids",
        }[kind]
        raise DataError(
            f"{what}: backbone {backbone!r} cannot read '{domain.name}', which holds {holds}; "
            f"use {readers} (default: {default_backbone(domain)!r})."
        )


__all__ = ["DEFAULT_BACKBONES", "check_backbone", "default_backbone", "input_kind"]
