"""Per-sample ``torchvision.transforms.v2`` pipelines for photos, and the choice for ``augment``.

Every pipeline takes what ``d.dataset()`` decodes -- a ``uint8 (C, H, W)`` tensor at native
resolution -- and returns a ``float32 (C, S, S)`` tensor in [0, 1] at the training size ``S``.
Normalisation is *not* here: ``TransferModel.prepare`` normalises with the backbone's own mean
and std, so one pipeline serves every backbone. Geometry runs on ``uint8`` (torchvision's fast
antialiased uint8 resize), the float conversion last. Each geometry-first pipeline is a
:class:`~tlkit.datasets.reduced.DecodeAtSize`: handed an undecoded JPEG by the dataset, it decodes
it at the coarsest DCT scale the output allows (a camera photo at 224 px decodes at 1/8 size);
handed a tensor, it runs the plain ``v2`` pipeline.

* :func:`train_transform` -- ``RandomResizedCrop`` + horizontal flip: the standard photo
  training view (Szegedy et al. 2015; timm and torchvision references).
* :func:`strong_transform` -- the same plus ``TrivialAugmentWide`` (Mueller & Hutter 2021) or
  ``RandAugment``: FixMatch's strong view for photos (Sohn et al. 2020 use RandAugment).
* :func:`eval_transform` -- ``Resize`` of the short side to ``S / crop_fraction`` +
  ``CenterCrop(S)``: the standard evaluation view.
* :class:`Views` -- several views of one sample as a tuple (FixMatch's weak and strong);
  ``collate`` stacks each.

The bundled digits keep their digit-safe, batch-level views (:mod:`tlkit.datasets.augment`: no
flips -- a mirrored 3 is no digit) on the device. :func:`auto_augment` says which family fits a
domain and :func:`pipelines` returns the whole set for ``augment="auto"``. A user's own ``v2``
pipeline is accepted wherever a transform is; :func:`check_transform` runs it on one sample and
says precisely what is wrong with its output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import DataError, check_image_size
from .reduced import DecodeAtSize, accepts_encoded, decoded

#: Fraction of the resized image the eval centre crop keeps (the ImageNet convention).
CROP_FRACTION = 0.875
#: ``RandomResizedCrop`` area range: milder than ImageNet-from-scratch's (0.08, 1), which throws
#: away too much of each image when fine-tuning on a few hundred photos.
TRAIN_SCALE = (0.35, 1.0)
#: In-memory images no larger than this (and the bundled digits) get the digit-safe views.
SMALL_IMAGE = 64
KINDS = ("photos", "digits", "colour", "none")


def _v2() -> Any:
    from torchvision.transforms import v2

    return v2


def _size(size: Any) -> int:
    return check_image_size(size, "size", allow_none=False)


def train_transform(
    size: int, *, scale: tuple[float, float] = TRAIN_SCALE, flip: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Photo training view: ``RandomResizedCrop(size, scale)`` + horizontal flip -> float."""
    v2 = _v2()
    crop = v2.RandomResizedCrop(_size(size), scale=tuple(scale), antialias=True)
    steps = [v2.RandomHorizontalFlip()] if flip else []
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return DecodeAtSize(crop, steps)


def strong_transform(
    size: int,
    *,
    policy: str = "trivial",
    scale: tuple[float, float] = TRAIN_SCALE,
    flip: bool = True,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """FixMatch's strong photo view: the training view plus ``TrivialAugmentWide``
    (``policy="trivial"``, no parameters to tune) or ``RandAugment`` (``"randaugment"``: 2 ops,
    magnitude 9 as in the paper) on ``uint8``, then float."""
    v2 = _v2()
    if policy == "trivial":
        aug = v2.TrivialAugmentWide()
    elif policy == "randaugment":
        aug = v2.RandAugment(num_ops=2, magnitude=9)
    else:
        raise DataError(f"policy must be 'trivial' or 'randaugment', got {policy!r}.")
    crop = v2.RandomResizedCrop(_size(size), scale=tuple(scale), antialias=True)
    steps = [v2.RandomHorizontalFlip()] if flip else []
    steps += [aug, v2.ToDtype(torch.float32, scale=True)]
    return DecodeAtSize(crop, steps)


def eval_transform(
    size: int, *, crop_fraction: float = CROP_FRACTION
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Evaluation view: short side to ``size / crop_fraction``, centre crop ``size`` -> float."""
    if not 0 < crop_fraction <= 1:
        raise DataError(f"crop_fraction must be in (0, 1], got {crop_fraction}.")
    v2 = _v2()
    s = _size(size)
    return DecodeAtSize(
        v2.Resize(round(s / crop_fraction), antialias=True),
        [v2.CenterCrop(s), v2.ToDtype(torch.float32, scale=True)],
    )


def squash_transform(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Every image resized to ``size x size`` whatever its aspect ratio -> float (digit-like
    files, and evaluation with ``resize="squash"``)."""
    v2 = _v2()
    return DecodeAtSize(v2.Resize((_size(size), _size(size)), antialias=True), [to_float()])


def to_float() -> Callable[[torch.Tensor], torch.Tensor]:
    """No geometry, just ``uint8`` -> float [0, 1] (digits: their views run batch-level)."""
    return _v2().ToDtype(torch.float32, scale=True)


class Views:
    """Apply several transforms to one sample and return the tuple of views.

    ``Views(train_transform(224), strong_transform(224))`` is FixMatch's (weak, strong) pair;
    under a seeded key both are drawn from the one seeded generator, so they differ from each
    other and are reproducible. Picklable when its transforms are.
    """

    def __init__(self, *transforms: Callable[[Any], Any]) -> None:
        if not transforms or not all(callable(t) for t in transforms):
            raise DataError("Views needs one or more callable transforms.")
        self.transforms = transforms
        #: an undecoded JPEG is welcome when a view decodes at its own size
        self.accepts_encoded = any(accepts_encoded(t) for t in transforms)

    def __call__(self, x: Any) -> tuple[Any, ...]:
        full = None
        views = []
        for t in self.transforms:
            if accepts_encoded(t):
                views.append(t(x))
            else:  # decode in full once for the views that need every pixel
                full = decoded(x) if full is None else full
                views.append(t(full))
        return tuple(views)

    def __repr__(self) -> str:
        return f"Views({', '.join(map(repr, self.transforms))})"


def require_images(domain: Any, what: str) -> None:
    """Raise a DataError saying ``what`` is image-only when ``domain`` holds tensors."""
    if domain.modality != "image":
        raise DataError(
            f"{what} works on images, but Domain '{domain.name}' holds tensor inputs (feature "
            "vectors or token ids). Turn augmentation off (augment=False) and use strategies "
            "that need only features or logits (losses, pseudo-labels without augmentation, "
            "DANN, MMD/DAN, CORAL, entropy minimisation)."
        )


def auto_augment(domain: Any) -> str:
    """Which augmentation family suits ``domain`` (what ``augment="auto"`` means):

    * ``"none"`` -- tensor data (features, tokens): nothing image-like applies;
    * ``"digits"`` -- in-memory images no larger than :data:`SMALL_IMAGE` px or with one
      channel (the bundled digits, MNIST-like arrays): translation/affine views, never flips;
    * ``"photos"`` -- files (decoded at native size) and larger colour arrays: crops and flips.
    """
    if domain.modality != "image":
        return "none"
    if not domain.in_memory:
        return "photos"
    c, h, w = domain.image_shape
    return "digits" if c == 1 or max(h, w) <= SMALL_IMAGE else "photos"


@dataclass(frozen=True)
class Pipelines:
    """Everything the engine needs to feed one domain.

    ``train``/``strong``/``eval`` are per-sample transforms for ``d.dataset()`` (``None``: feed
    the in-memory tensor directly); ``batch_weak``/``batch_strong`` are batch-level views to run
    on the device (the digit-safe ones), or ``None``.
    """

    kind: str
    train: Callable[[Any], Any] | None
    strong: Callable[[Any], Any] | None
    eval: Callable[[Any], Any] | None
    batch_weak: Callable[..., torch.Tensor] | None = None
    batch_strong: Callable[..., torch.Tensor] | None = None


def pipelines(domain: Any, image_size: int | None = None, augment: Any = "auto") -> Pipelines:
    """The transforms for ``domain`` at ``image_size`` (default: the domain's own
    ``image_size``, else 224 for files) under ``augment``:

    ``"auto"`` (:func:`auto_augment`), ``"photos"``, ``"digits"``, ``"colour"`` (random
    background and ink colours per image, batch-wise, nothing else), ``True`` (= ``"auto"``),
    ``False``/``"none"`` (eval view only), or a callable (your own ``v2`` pipeline, used for
    training; the eval view stays the standard one).
    """
    from .augment import colour_augment, strong_augment, weak_augment

    if augment is True:
        augment = "auto"
    if augment is False or augment is None:
        augment = "none"
    custom = augment if callable(augment) else None
    if custom is not None:
        if _looks_like_v2(custom):
            require_images(domain, "a torchvision image transform")
        kind = auto_augment(domain) if domain.modality == "image" else "none"
    elif augment == "auto":
        kind = auto_augment(domain)
    elif augment in KINDS:
        kind = augment
        if kind != "none":
            require_images(domain, f"augment={augment!r}")
    else:
        raise DataError(
            f"augment must be 'auto', 'photos', 'digits', 'colour', True/False or a transform, got "
            f"{augment!r}."
        )
    if domain.modality != "image":
        return Pipelines("none", custom, None, None)
    size = image_size if image_size is not None else domain.image_size
    if domain.in_memory:
        # in memory: the engine indexes the tensor and prepare() resizes; views are batch-level
        if kind == "digits":
            return Pipelines("digits", custom, None, None, weak_augment, strong_augment)
        if kind == "colour":
            return Pipelines("colour", custom, None, None, colour_augment, strong_augment)
        if kind == "none" and custom is None:
            return Pipelines("none", None, None, None)
    size = _size(size if size is not None else 224)
    evaluation = eval_transform(size)
    if custom is not None:
        return Pipelines(kind, custom, None, evaluation)
    if kind == "none":
        return Pipelines("none", evaluation, None, evaluation)
    if kind in ("digits", "colour"):  # files of digit-like images: no flips, no crops; batch views
        square = squash_transform(size)
        weak = colour_augment if kind == "colour" else weak_augment
        return Pipelines(kind, square, None, square, weak, strong_augment)
    return Pipelines("photos", train_transform(size), strong_transform(size), evaluation)


def _looks_like_v2(t: Any) -> bool:
    """An image transform: torchvision's, or one of this module's photo pipelines."""
    return isinstance(t, DecodeAtSize) or type(t).__module__.startswith("torchvision.transforms")


def check_transform(domain: Any, transform: Callable[[Any], Any], n: int = 2) -> torch.Tensor:
    """Run ``transform`` on the first ``n`` readable samples; return the stacked output, or
    raise a DataError that says how to fix the pipeline (wrong dtype, range, rank, sizes)."""
    from .loader import collate

    ds = domain.dataset(transform)
    items = []
    for i in range(min(len(ds), 64)):
        try:
            item = ds[(i, 0)]
        except DataError:
            raise
        except Exception as e:
            raise DataError(
                f"the transform failed on sample {i} of '{domain.name}' ({type(e).__name__}: "
                f"{e}). It receives a uint8 (C, H, W) tensor; drop ToTensor()/PILToTensor() "
                "from the pipeline (the image is already a tensor)."
            ) from e
        if item is not None:
            items.append(item)
        if len(items) >= n:
            break
    if not items:
        raise DataError(f"no sample of '{domain.name}' could be read to check the transform.")
    x, _ = collate(items)
    for v in x if isinstance(x, tuple) else (x,):
        if domain.modality == "image":
            if not v.is_floating_point():
                raise DataError(
                    f"the transform returns {v.dtype} images; end it with "
                    "v2.ToDtype(torch.float32, scale=True) so they are floats in [0, 1] "
                    "(normalisation happens in the model)."
                )
            if v.ndim != 4 or v.shape[1] not in (1, 3):
                raise DataError(
                    f"the transform returns shape {tuple(v.shape[1:])} per sample; images "
                    "must be (C, H, W) with C = 1 or 3."
                )
            lo, hi = float(v.min()), float(v.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise DataError(
                    f"the transform returns values in [{lo:.3g}, {hi:.3g}]; leave them in "
                    "[0, 1] (remove v2.Normalize: the model normalises with its backbone's mean "
                    "and std)."
                )
    return x


def describe(t: Callable[[Any], Any] | Sequence[Any] | None) -> str:
    """A one-line description of a transform, for logs and checkpoints."""
    return "none" if t is None else " ".join(repr(t).split())
