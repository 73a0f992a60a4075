"""The image size a run trains at, and why.

The rule, first match wins:

1. ``image_size=`` given to ``fit`` -- in-memory tensors are resized to it as well as files;
2. the size the data carries (:attr:`Domain.image_size`: ``load(name, image_size=16)``,
   ``from_folder(path, image_size=64)``) -- data prepared at a size trains at that size;
3. the backbone's own input size (a pretrained network's training resolution, the small CNN's
   32), else :data:`DEFAULT_IMAGE_SIZE` for a backbone that takes any size.

Rules 1 and 2 decide the size the network is built for (:func:`requested_image_size`); rule 3 is
what the network does when neither applies. :func:`size_line` is the line a run prints.
"""

from __future__ import annotations

from typing import Any

#: The training size of file-backed images when neither the run, the data nor the backbone sets
#: one.
DEFAULT_IMAGE_SIZE = 224


def data_image_size(data: Any) -> int | None:
    """The size ``data`` (a Domain or DomainPair) carries, ``None`` when it carries none."""
    domains = [getattr(data, "source", data), getattr(data, "target", None)]
    for domain in domains:
        size = getattr(domain, "image_size", None)
        if size:
            return int(size)
    return None


def requested_image_size(config_size: int | None, data: Any) -> int | None:
    """The side the network is built for on image data: ``image_size=``, else the data's own
    size; ``None`` leaves the backbone's default (and non-image data always has ``None``)."""
    if getattr(data, "modality", "image") != "image":
        return None
    if config_size:
        return int(config_size)
    return data_image_size(data)


def training_image_size(config_size: int | None, data: Any, backbone: Any) -> int:
    """The side a run trains at (see the module docstring)."""
    size = requested_image_size(config_size, data) or getattr(backbone, "input_size", None)
    return int(size) if size else DEFAULT_IMAGE_SIZE


def size_reason(config_size: int | None, data: Any) -> str:
    """Where a run's image size comes from, in words, for :func:`size_line`."""
    if config_size:
        return "image_size="
    if data_image_size(data):
        return "the data's own size"
    return "the backbone's default"


def size_line(size: int, why: str) -> str:
    """The one line a run prints about its image size."""
    hint = "" if why == "image_size=" else "; pass image_size= to change it"
    return f"image size: training at {size}x{size} px ({why}{hint})"
