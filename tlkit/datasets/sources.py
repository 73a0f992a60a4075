"""User data into :class:`Domain`: arrays/tensors, an ImageFolder directory, a torchvision dataset.

Every path ends in :func:`from_arrays`, so all of them accept the same layouts and fail with the
same messages. Images are held in memory as ``uint8``; nothing here downloads anything unless the
caller passes ``download=True`` to :func:`from_torchvision`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .domain import UNLABELLED, DataError, Domain

#: File extensions read by :func:`from_folder` (the set torchvision's ImageFolder reads).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_RANKS = "(N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3}"


def _resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a ``uint8`` batch ``(N, C, H, W)`` with bilinear interpolation (antialiased down)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == hw:
        return images
    down = hw[0] < images.shape[-2] or hw[1] < images.shape[-1]
    out = []
    for chunk in images.split(1024):  # bounded float memory for big sets
        x = F.interpolate(
            chunk.float(), size=hw, mode="bilinear", align_corners=False, antialias=down
        )
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _to_tensor(images: Any) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.detach().cpu()
    arr = np.asarray(images)
    if arr.dtype == object:
        raise DataError(
            "images could not be stacked into one array (ragged sizes or mixed types); "
            "resize them to one size first, or use from_folder(..., image_size=...)."
        )
    return torch.from_numpy(np.ascontiguousarray(arr))


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x
    if x.dtype == torch.bool:
        return x.to(torch.uint8) * 255
    if x.is_floating_point():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1 or np.isnan(lo) or np.isnan(hi):
            raise DataError(
                f"float images must be in [0, 1], got values in [{lo:g}, {hi:g}]. Scale them "
                "first (e.g. images / 255 for 0-255 data), or pass uint8 images."
            )
        return (x.double() * 255).round_().to(torch.uint8)
    if x.is_complex():
        raise DataError(f"images must be real numbers, got {x.dtype}.")
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > 255:
        raise DataError(
            f"integer images must be in 0..255, got values in [{lo}, {hi}]. Rescale them to "
            "0..255 (uint8) or to floats in [0, 1]."
        )
    return x.to(torch.uint8)


def _channels_first(x: torch.Tensor, channels_last: bool | None) -> torch.Tensor:
    shape = tuple(x.shape)
    if x.ndim == 3:
        if channels_last:
            raise DataError(f"channels_last=True needs 4-D images (N, H, W, C), got shape {shape}.")
        return x.unsqueeze(1)
    if x.ndim != 4:
        raise DataError(f"images have shape {shape} (rank {x.ndim}); expected {_RANKS}.")
    if channels_last is None:
        # (N, H, W, 4) is RGBA, channels-last: detected so the error can say "drop alpha"
        channels_last = shape[-1] in (1, 3, 4) and shape[1] not in (1, 3)
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    c = x.shape[1]
    if c not in (1, 3):
        hint = " Drop the alpha channel (images[..., :3])." if c == 4 else ""
        raise DataError(
            f"images have shape {shape}: {c} channels in the "
            f"{'last' if channels_last else 'second'} dimension, but 1 (grayscale) or 3 (RGB) "
            f"are supported; expected {_RANKS}.{hint} Pass channels_last=True/False if the "
            "layout was guessed wrong."
        )
    return x.contiguous()


def from_arrays(
    images: Any,
    labels: Any = None,
    *,
    classes: Sequence[str] | None = None,
    name: str = "arrays",
    task: str = "classification",
    channels_last: bool | None = None,
) -> Domain:
    """Wrap in-memory images (numpy or torch) as a :class:`Domain`.

    Accepts ``uint8`` (0..255) or float images in [0, 1] shaped ``(N, H, W)``, ``(N, C, H, W)``
    or ``(N, H, W, C)``. Channels-last is detected when the last dimension is 1 or 3 and the
    second is not; ``channels_last`` forces it either way. ``labels=None`` marks every image
    unlabelled (a target domain); pass ``classes`` then, so the label set is known. Without
    ``classes``, classification classes are named ``"0" .. "K-1"`` from the largest label.
    """
    x = _to_tensor(images)
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"Domain '{name}': no images (shape {tuple(x.shape)}); pass at least one.")
    x = _channels_first(x, channels_last)
    x = _to_uint8(x)
    if labels is None:
        if task != "classification":
            raise DataError("Regression domains need targets; pass labels=...")
        y = torch.full((len(x),), UNLABELLED, dtype=torch.long)
    else:
        y = (
            labels.detach().cpu()
            if isinstance(labels, torch.Tensor)
            else torch.as_tensor(np.asarray(labels))
        )
    if classes is None and task == "classification":
        known = y[y != UNLABELLED] if len(y) else y
        k = int(known.max()) + 1 if len(known) else 0
        if k == 0:
            raise DataError(
                f"Domain '{name}': no labelled images and no classes=[...]; name the classes "
                "so the label set is known."
            )
        classes = [str(i) for i in range(k)]
    return Domain(x, y, classes=tuple(classes or ()), name=name, task=task)


def _find_classes(root: Path) -> list[str]:
    # torchvision.datasets.folder.find_classes: sorted names of the sub-directories.
    return sorted(e.name for e in os.scandir(root) if e.is_dir())


def from_folder(
    path: str | os.PathLike, *, image_size: int = 224, name: str | None = None
) -> Domain:
    """Load an ImageFolder tree (``path/<class>/<image>``) into memory as RGB ``uint8``.

    Classes are the sorted sub-folder names (as torchvision's ImageFolder orders them), images
    are found recursively inside each and resized (squashed) to ``image_size x image_size`` so
    that they stack into one tensor. Memory is about ``3 * image_size**2`` bytes per image.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"from_folder: '{root}' is not a directory. Pass the folder that holds one "
            "sub-folder per class (path/cat/001.jpg, path/dog/002.jpg ...)."
        )
    classes = _find_classes(root)
    if not classes:
        raise DataError(
            f"from_folder: '{root}' has no class sub-folders. Put each class's images in its own "
            "sub-folder (path/cat/001.jpg, path/dog/002.jpg ...)."
        )
    files: list[tuple[Path, int]] = []
    for idx, cls in enumerate(classes):
        for dirpath, _, fnames in sorted(os.walk(root / cls, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    files.append((Path(dirpath) / fname, idx))
    if not files:
        raise DataError(
            f"from_folder: no images under '{root}' (looked for {', '.join(IMG_EXTENSIONS)} in "
            f"the class folders {classes[:5]}{'...' if len(classes) > 5 else ''}). Put the image "
            "files inside the class sub-folders."
        )
    out = torch.empty((len(files), 3, image_size, image_size), dtype=torch.uint8)
    for i, (file, _) in enumerate(files):
        try:
            with Image.open(file) as im:
                im = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                out[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(
                f"from_folder: cannot read image '{file}' ({e}). Remove or replace the file."
            ) from e
    labels = torch.tensor([c for _, c in files], dtype=torch.long)
    return Domain(out, labels, classes=tuple(classes), name=name or root.name)


_SPLIT_FOR = {True: "train", False: "test"}


def _instantiate(cls: type, root: str, train: bool, download: bool) -> Any:
    params = inspect.signature(cls).parameters
    if "train" in params or "split" not in params:
        return cls(root, train=train, download=download)
    return cls(root, split=_SPLIT_FOR[train], download=download)


def from_torchvision(
    name: str,
    root: str | os.PathLike,
    *,
    train: bool = True,
    download: bool = False,
    image_size: int | None = None,
) -> Domain:
    """Load a ``torchvision.datasets`` class by name (``"MNIST"``, ``"CIFAR10"``, ``"SVHN"`` ...).

    Datasets taking ``split=`` instead of ``train=`` get ``"train"``/``"test"``. Data already
    under ``root`` loads offline; otherwise pass ``download=True`` on a machine that is online.
    Images of differing sizes need ``image_size`` so they stack into one tensor.
    """
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)):
        valid = ["MNIST", "FashionMNIST", "KMNIST", "EMNIST", "CIFAR10", "CIFAR100", "SVHN", "USPS"]
        raise DataError(
            f"'{name}' is not a torchvision dataset. Valid names include {', '.join(valid)} "
            "(see torchvision.datasets; names are case-sensitive)."
        )
    root = os.fspath(Path(root).expanduser())
    try:
        ds = _instantiate(cls, root, train, download)
    except RuntimeError as e:
        if download:
            raise DataError(
                f"torchvision {name}: download or load failed under '{root}': {e}"
            ) from e
        raise DataError(
            f"torchvision {name} is not present under '{root}' ({e}). Pass download=True on a "
            "machine that is online, or point root at a folder that already holds it."
        ) from e
    except (TypeError, ValueError) as e:
        raise DataError(
            f"torchvision {name} takes neither train= nor split='train'/'test' the usual way "
            f"({e}); build it yourself and pass images and labels to from_arrays()."
        ) from e
    classes = list(getattr(ds, "classes", None) or [])
    data = getattr(ds, "data", None)
    targets = getattr(ds, "targets", getattr(ds, "labels", None))
    if (
        isinstance(data, (np.ndarray, torch.Tensor))
        and data.ndim in (3, 4)
        and targets is not None
        and len(targets) == len(data)
    ):
        images, labels = data, np.asarray(targets)
    else:
        images, labels = _materialise(ds, name, image_size)
    domain = from_arrays(
        images,
        labels,
        classes=classes or None,
        name=f"{name}-{'train' if train else 'test'}",
    )
    if image_size is not None:
        domain = Domain(
            _resize(domain.images, image_size),
            domain.labels,
            classes=domain.classes,
            name=domain.name,
        )
    return domain


def _materialise(ds: Any, name: str, image_size: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """Read a generic (PIL image, label) dataset item by item into one ``uint8`` tensor."""
    from PIL import Image

    items = [ds[i] for i in range(len(ds))]
    if not items:
        raise DataError(f"torchvision {name}: the dataset is empty.")
    pics = [im for im, _ in items]
    gray = all(isinstance(p, Image.Image) and p.mode in ("L", "1") for p in pics)
    arrays = []
    for p in pics:
        if isinstance(p, Image.Image):
            p = p.convert("L" if gray else "RGB")
            if image_size is not None:
                p = p.resize((image_size, image_size), Image.BILINEAR)
            a = torch.from_numpy(np.asarray(p).copy())
            a = a.unsqueeze(0) if a.ndim == 2 else a.permute(2, 0, 1)
        else:
            a = _channels_first(_to_tensor(p).unsqueeze(0), None)[0]
            a = _to_uint8(a)
            if image_size is not None:
                a = _resize(a.unsqueeze(0), image_size)[0]
        arrays.append(a)
    if len({tuple(a.shape) for a in arrays}) > 1:
        raise DataError(
            f"torchvision {name}: images have different sizes; pass image_size=... to resize them."
        )
    return torch.stack(arrays), np.asarray([int(t) for _, t in items])
