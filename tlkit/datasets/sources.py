"""In-memory user data into :class:`Domain`: image arrays, any per-sample tensors, torchvision.

:func:`from_arrays` takes images (numpy or torch, any common layout, uint8 / uint16 / float) and
:func:`from_tensors` any other per-sample tensors (float feature vectors, int64 token ids), both
with labels given as class ids or class names. :func:`from_torchvision` keeps array-backed
datasets (MNIST, CIFAR) in memory and wraps the others lazily. Image files are in
:mod:`tlkit.datasets.files`. Nothing here downloads anything unless the caller passes
``download=True`` to :func:`from_torchvision`.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .backing import DatasetBacking
from .domain import (
    UNLABELLED,
    DataError,
    DataWarning,
    Domain,
    check_image_size,
)
from .files import IMG_EXTENSIONS, from_folder, labels_from_values  # noqa: F401 (re-exported)
from .validate import warn_sparse_classes

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
        images = images.detach().cpu()
        if images.dtype in (torch.uint16, torch.uint32, torch.uint64):  # few ops support these
            images = torch.from_numpy(images.numpy().astype(np.int64)), images.dtype
            return _sixteen_bit(*images)
        return images
    arr = np.asarray(images)
    if arr.dtype == object:
        raise DataError(
            "images could not be stacked into one array (ragged sizes or mixed types); "
            "resize them to one size first, or save them as files and use from_folder()."
        )
    if arr.dtype.kind in "USV":
        raise DataError(
            f"images must be numbers, got {arr.dtype}. For image files use "
            "tlkit.datasets.from_paths(paths) or from_folder(folder)."
        )
    if arr.dtype in (np.uint16, np.uint32, np.uint64):
        return _sixteen_bit(torch.from_numpy(arr.astype(np.int64)), arr.dtype)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _sixteen_bit(x: torch.Tensor, dtype: Any) -> torch.Tensor:
    """uint16 images are 16-bit images: 0..65535 scaled to 0..255 (as PIL and torchvision do)."""
    if str(dtype).endswith("uint16"):
        hi = int(x.max()) if x.numel() else 0
        if 0 < hi <= 255:
            warnings.warn(
                f"images are uint16 but their largest value is {hi}: scaled as 16-bit data "
                "(65535 = white) they are nearly black. If they are 8-bit values in a 16-bit "
                "array, pass images.astype(np.uint8) instead.",
                DataWarning,
                stacklevel=4,
            )
        return ((x.double() * (255.0 / 65535.0)).round_()).to(torch.uint8)
    raise DataError(
        f"images of type {dtype} are not supported: convert them to uint8 (0..255), uint16 "
        "(16-bit) or float in [0, 1]."
    )


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


def _labels(
    labels: Any, classes: Sequence[str] | None, n: int, name: str, task: str
) -> tuple[torch.Tensor, Sequence[str] | None]:
    """Labels as a tensor; class names (strings) become ids, NaN and junk become DataErrors."""
    if labels is None:
        if task != "classification":
            raise DataError(f"Domain '{name}': regression needs targets; pass labels=...")
        return torch.full((n,), UNLABELLED, dtype=torch.long), classes
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu(), classes
    arr = np.asarray(labels)
    if arr.dtype.kind in "USO" and task == "classification":
        flat = arr.reshape(-1).tolist()
        if arr.dtype.kind == "O" and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in flat
        ):
            return torch.as_tensor(np.asarray(flat, dtype=np.int64)), classes
        bad = [v for v in flat if v is None or (isinstance(v, float) and np.isnan(v))]
        if bad:
            raise DataError(
                f"Domain '{name}': {len(bad)} label(s) are missing (None/NaN); mark unlabelled "
                "samples with -1 (tlkit.datasets.UNLABELLED), or drop them."
            )
        ids, names = labels_from_values(flat, classes, f"Domain '{name}'")
        return torch.from_numpy(ids), names
    if arr.dtype.kind in "USO":
        raise DataError(
            f"Domain '{name}': regression targets must be numbers, got {arr.dtype} values such "
            f"as {arr.reshape(-1)[:3].tolist()}."
        )
    return torch.from_numpy(np.ascontiguousarray(arr)), classes


def _default_classes(y: torch.Tensor, name: str) -> list[str]:
    """``"0" .. "K-1"`` from the largest label; warns when the ids are sparse."""
    known = y[y != UNLABELLED] if len(y) else y
    if known.is_floating_point():
        if not torch.isfinite(known).all():
            raise DataError(
                f"Domain '{name}': labels contain NaN or infinite values; mark unlabelled "
                "samples with -1 (tlkit.datasets.UNLABELLED), or drop them."
            )
        if not torch.equal(known, known.round()):
            raise DataError(
                f"Domain '{name}': classification labels must be integers; got fractional "
                "values. For continuous targets use task='regression'."
            )
    known = known.long()
    if len(known) and int(known.min()) < 0:
        raise DataError(
            f"Domain '{name}': labels {known[known < 0].unique()[:5].tolist()} are negative; "
            "class ids are 0..K-1, and -1 marks an unlabelled sample."
        )
    k = int(known.max()) + 1 if len(known) else 0
    if k == 0:
        raise DataError(
            f"Domain '{name}': no labelled samples and no classes=[...]; name the classes "
            "so the label set is known."
        )
    warn_sparse_classes(known, name)
    return [str(i) for i in range(k)]


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

    Accepts ``uint8`` (0..255), ``uint16`` (16-bit, scaled so 65535 -> 255) or float images in
    [0, 1] shaped ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)``. Channels-last is detected
    when the last dimension is 1 or 3 and the second is not; ``channels_last`` forces it either
    way. ``labels`` are class ids or class names (strings: the classes are then the sorted names,
    or ``classes=[...]`` in your order); ``labels=None`` marks every image unlabelled (a target
    domain; pass ``classes`` then, so the label set is known). Without ``classes``,
    classification classes are named ``"0" .. "K-1"`` from the largest label, with a warning
    when most of those ids are unused (a stray label 99 would make 100 classes).
    """
    x = _to_tensor(images)
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"Domain '{name}': no images (shape {tuple(x.shape)}); pass at least one.")
    x = _channels_first(x, channels_last)
    x = _to_uint8(x)
    y, classes = _labels(labels, classes, len(x), name, task)
    if classes is None and task == "classification":
        classes = _default_classes(y, name)
    return Domain(x, y, classes=tuple(classes or ()), name=name, task=task)


def from_tensors(
    inputs: Any,
    labels: Any = None,
    *,
    classes: Sequence[str] | None = None,
    name: str = "tensors",
    task: str = "classification",
    info: dict[str, Any] | None = None,
) -> Domain:
    """Any per-sample tensors as a ``"tensor"`` domain: float features ``(N, D)``, int64 token
    ids ``(N, L)`` (padding id 0), or anything ``(N, ...)`` your backbone reads.

    Labels work as in :func:`from_arrays`. ``info`` carries what a backbone needs to know
    (``{"vocab_size": V, "padding_id": 0}`` for tokens; ``in_features`` is the feature size).
    Image-only features (augmentation, image transforms) refuse these domains with a DataError.
    """
    if isinstance(inputs, torch.Tensor):
        n = len(inputs) if inputs.ndim else 0
    else:
        inputs = np.asarray(inputs)
        n = len(inputs) if inputs.ndim else 0
    if n == 0:
        raise DataError(f"Domain '{name}': no samples in inputs; pass at least one row.")
    y, classes = _labels(labels, classes, n, name, task)
    if classes is None and task == "classification":
        classes = _default_classes(y, name)
    return Domain(
        labels=y, classes=tuple(classes or ()), name=name, task=task, inputs=inputs,
        info=dict(info or {}),
    )  # fmt: skip


_SPLIT_FOR = {True: "train", False: "test"}


def _instantiate(cls: type, root: str, train: bool, download: bool) -> Any:
    params = inspect.signature(cls).parameters
    if "train" in params or "split" not in params:
        return cls(root, train=train, download=download)
    return cls(root, split=_SPLIT_FOR[train], download=download)


def from_torchvision(
    name: str | torch.utils.data.Dataset,
    root: str | os.PathLike | None = None,
    *,
    train: bool = True,
    download: bool = False,
    image_size: int | None = None,
    in_memory: bool | None = None,
) -> Domain:
    """A ``torchvision.datasets`` class by name (``"MNIST"``, ``"CIFAR10"``, ``"SVHN"`` ...), or a
    dataset object returning ``(image, target)`` items.

    Datasets taking ``split=`` instead of ``train=`` get ``"train"``/``"test"``. Data already
    under ``root`` loads offline; otherwise pass ``download=True`` on a machine that is online.
    Datasets that hold their images as one array (MNIST, CIFAR, SVHN) stay in memory (the fast
    path; ``image_size`` resizes them). Others are wrapped lazily (``in_memory=False``): a
    dataset listing files (``samples``, like ImageFolder) becomes a file domain, any other is
    read item by item in ``DataLoader`` workers; labels come from ``targets`` / ``labels``, or
    from one pass over the items. ``in_memory=True`` reads every image now (they must then
    share one size, or pass ``image_size``).
    """
    import torchvision.datasets as tvd

    if isinstance(name, str):
        cls = getattr(tvd, name, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)):
            valid = ["MNIST", "FashionMNIST", "KMNIST", "EMNIST", "CIFAR10", "CIFAR100", "SVHN",
                     "USPS"]  # fmt: skip
            raise DataError(
                f"'{name}' is not a torchvision dataset. Valid names include {', '.join(valid)} "
                "(see torchvision.datasets; names are case-sensitive)."
            )
        if root is None:
            raise DataError(f"torchvision {name}: pass root= (the folder holding the data).")
        root = os.fspath(Path(root).expanduser())
        try:
            ds = _instantiate(cls, root, train, download)
        except RuntimeError as e:
            if download:
                raise DataError(
                    f"torchvision {name}: download or load failed under '{root}': {e}"
                ) from e
            raise DataError(
                f"torchvision {name} is not present under '{root}' ({e}). Pass download=True on "
                "a machine that is online, or point root at a folder that already holds it."
            ) from e
        except (TypeError, ValueError) as e:
            raise DataError(
                f"torchvision {name} takes neither train= nor split='train'/'test' the usual way "
                f"({e}); build it yourself and pass the dataset object to from_torchvision()."
            ) from e
        label = f"{name}-{'train' if train else 'test'}"
    elif isinstance(name, torch.utils.data.Dataset) or hasattr(name, "__getitem__"):
        ds, label = name, type(name).__name__
    else:
        raise DataError(
            f"from_torchvision takes a dataset name or a dataset object, got {type(name).__name__}."
        )
    size = check_image_size(image_size)
    classes = [str(c) for c in (getattr(ds, "classes", None) or [])]
    data = getattr(ds, "data", None)
    targets = getattr(ds, "targets", getattr(ds, "labels", None))
    if (
        in_memory is not False
        and isinstance(data, (np.ndarray, torch.Tensor))
        and data.ndim in (3, 4)
        and targets is not None
        and len(targets) == len(data)
    ):
        domain = from_arrays(data, np.asarray(targets), classes=classes or None, name=label)
        if size is not None:
            domain = Domain(
                _resize(domain.images, size), domain.labels, classes=domain.classes,
                name=domain.name,
            )  # fmt: skip
        return domain
    if in_memory:
        images, labels = _materialise(ds, label, size)
        return from_arrays(images, labels, classes=classes or None, name=label)
    return _lazy_dataset(ds, label, classes, targets, size)


def _lazy_dataset(
    ds: Any, label: str, classes: list[str], targets: Any, size: int | None
) -> Domain:
    """Wrap a non-array dataset without decoding its images."""
    from .backing import FileBacking, PathTable

    n = len(ds)
    if n == 0:
        raise DataError(f"torchvision {label}: the dataset is empty.")
    samples = getattr(ds, "samples", None)
    if (
        isinstance(samples, list)
        and len(samples) == n
        and all(
            isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str) for s in samples[:10]
        )
    ):
        backing: Any = FileBacking(PathTable.from_paths([os.path.abspath(p) for p, _ in samples]))
        y = np.asarray([int(t) for _, t in samples], dtype=np.int64)
    else:
        backing = DatasetBacking(ds, np.arange(n), label)
        if targets is not None and len(targets) == n:
            y = np.asarray([int(t) for t in targets], dtype=np.int64)
        else:
            from tqdm.auto import tqdm

            items = tqdm(range(n), desc=f"reading {label} labels", unit="item", disable=n < 5000)
            y = np.asarray([int(ds[i][1]) for i in items], dtype=np.int64)
    if not classes:
        classes = _default_classes(torch.from_numpy(y), label)
    return Domain(
        labels=torch.from_numpy(y), classes=tuple(classes), name=label, backing=backing,
        image_size=size,
    )  # fmt: skip


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
