"""Decode photos at the size training needs: pipelines that fix their output geometry first.

A 4000x3000 camera JPEG trained at 224 px does not need its 12 megapixels decoded. JPEG stores
8x8 blocks of DCT coefficients, and libjpeg can decode them at 1/2, 1/4 or 1/8 scale for a
fraction of the cost (Pillow's ``Image.draft``). :class:`DecodeAtSize` is a ``transforms.v2``
pipeline whose first step decides the output geometry (``RandomResizedCrop``, ``Resize``):

* on a decoded ``uint8`` tensor it runs the pipeline unchanged;
* on an :class:`~tlkit.datasets.decode.EncodedImage` (what the dataset hands a transform that
  declares ``accepts_encoded``, see :func:`load_for`) it draws the crop with torchvision's own
  sampler on the *full-size* geometry -- so the crop statistics are RandomResizedCrop's, and
  the same seed picks the same crop either way -- then decodes the JPEG at the coarsest DCT scale
  that still covers the crop with at least the output's pixels, maps the crop box to that scale
  (fractional coordinates, no rounding), and resizes it antialiased (bilinear) to the output
  size. The rest of the pipeline (flips, TrivialAugment, centre crop, to float) runs on the
  result as before.

PNG and other formats, and JPEGs whose crop is too small to shrink, take the full-resolution
path. Against full decoding followed by the same antialiased resize the difference is about one
grey level (``tests/datasets/test_decode_reduced.py`` holds it under 3/255 on camera-size JPEGs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .decode import EncodedImage


def _v2() -> Any:
    from torchvision.transforms import v2

    return v2


def _canvas(width: int, height: int) -> torch.Tensor:
    """A stand-in image of that size for torchvision's parameter samplers (no memory)."""
    return torch.empty((), dtype=torch.uint8).expand(3, height, width)


class DecodeAtSize:
    """``head`` (``v2.RandomResizedCrop`` or ``v2.Resize``) then ``rest``, decoding JPEGs at
    reduced scale when given an :class:`EncodedImage` (see the module notes).

    Picklable; ``pipeline`` is the equivalent plain ``v2.Compose`` used for tensors.
    """

    accepts_encoded = True

    def __init__(self, head: Any, rest: Sequence[Callable[[Any], Any]] = ()) -> None:
        v2 = _v2()
        if not isinstance(head, (v2.RandomResizedCrop, v2.Resize)):
            raise TypeError(
                f"DecodeAtSize's first step must be v2.RandomResizedCrop or v2.Resize, got "
                f"{type(head).__name__}."
            )
        if isinstance(head, v2.Resize) and head.max_size is not None:
            raise TypeError("DecodeAtSize does not take v2.Resize(max_size=...).")
        self.head = head
        self.rest = v2.Compose(list(rest)) if rest else None
        self.pipeline = v2.Compose([head, *rest])

    def __call__(self, x: Any) -> Any:
        if not isinstance(x, EncodedImage):
            return self.pipeline(x)
        y = self.geometry(x)
        return self.rest(y) if self.rest is not None else y

    def plan(self, width: int, height: int) -> tuple[tuple[float, float, float, float],
                                                     tuple[int, int]]:  # fmt: skip
        """``(box, out)``: the region of a ``width x height`` image to take (left, top, right,
        bottom) and its output size (width, height), drawn as the head would draw them."""
        head = self.head
        if isinstance(head, _v2().RandomResizedCrop):
            p = head.make_params([_canvas(width, height)])
            top, left, h, w = p["top"], p["left"], p["height"], p["width"]
            oh, ow = head.size
            return (left, top, left + w, top + h), (ow, oh)
        from torchvision.transforms.v2.functional._geometry import _compute_resized_output_size

        oh, ow = _compute_resized_output_size((height, width), list(head.size), None)
        return (0, 0, width, height), (ow, oh)

    def geometry(self, image: EncodedImage) -> torch.Tensor:
        """The head's output for ``image``, decoded at the coarsest scale that covers it."""
        width, height = image.size
        box, out = self.plan(width, height)
        reduction = min((box[2] - box[0]) / out[0], (box[3] - box[1]) / out[1])
        scale = image.scale_for(reduction)
        if scale > 1:
            return image.resized(box, out, scale)
        from torchvision.transforms.v2 import functional as F

        x = image.decode()
        left, top, right, bottom = (int(v) for v in box)
        if (left, top, right, bottom) == (0, 0, width, height):
            return F.resize(x, [out[1], out[0]], interpolation=self.head.interpolation,
                            antialias=True)  # fmt: skip
        return F.resized_crop(x, top, left, bottom - top, right - left, [out[1], out[0]],
                              interpolation=self.head.interpolation, antialias=True)  # fmt: skip

    def __repr__(self) -> str:
        return f"DecodeAtSize({self.pipeline!r})"


def accepts_encoded(transform: Any) -> bool:
    """Whether ``transform`` takes an :class:`EncodedImage` (and so decodes what it needs)."""
    return bool(getattr(transform, "accepts_encoded", False))


def load_for(backing: Any, index: int, transform: Any) -> Any:
    """Sample ``index`` as ``transform`` wants it: an :class:`EncodedImage` (header read,
    pixels not decoded) for file and shard images when the transform accepts one, else the
    backing's decoded sample. Raises :class:`~tlkit.datasets.decode.DecodeError`."""
    if accepts_encoded(transform):
        from .backing import FileBacking, ShardBacking

        if isinstance(backing, FileBacking):
            return EncodedImage.from_file(backing.table[index], backing.max_pixels)
        if isinstance(backing, ShardBacking):
            return EncodedImage(backing.read_bytes(index), backing.describe(index),
                                backing.max_pixels)  # fmt: skip
    return backing.load(index)


def decoded(x: Any) -> Any:
    """``x`` as a decoded tensor (for steps that need pixels before any geometry)."""
    return x.decode() if isinstance(x, EncodedImage) else x
