"""What :class:`~tlkit.datasets.Domain` checks its inputs and labels with: clear
:class:`DataError` messages for the shapes, dtypes and values it cannot train on."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from .errors import UNLABELLED, DataError, DataWarning


def as_label_tensor(labels: Any, name: str, task: str) -> torch.Tensor:
    """Labels as a tensor, with DataErrors for strings, objects, NaN and infinities."""
    if isinstance(labels, torch.Tensor):
        y = labels.detach().cpu()
    else:
        arr = np.asarray(labels)
        if arr.dtype.kind in "USO":
            sample = [str(v) for v in arr.reshape(-1)[:3]]
            raise DataError(
                f"Domain '{name}': labels must be numbers, got {arr.dtype} values such as "
                f"{sample}. Class names go through tlkit.datasets.from_arrays(images, labels) / "
                "from_tensors(...), which map names to class ids (or map them yourself and pass "
                "classes=[...])."
            )
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        y = torch.from_numpy(np.ascontiguousarray(arr))
    if y.is_complex():
        raise DataError(f"Domain '{name}': labels must be real numbers, got {y.dtype}.")
    if y.is_floating_point():
        bad = ~torch.isfinite(y)
        if bad.any():
            where = bad.reshape(len(y), -1).any(1).nonzero().flatten() if y.ndim else bad
            pos = where[:5].tolist() if y.ndim else []
            hint = (
                "mark unlabelled samples with -1 (tlkit.datasets.UNLABELLED)"
                if task == "classification"
                else "drop those samples or fill the missing targets"
            )
            raise DataError(
                f"Domain '{name}': {int(bad.sum())} label(s) are NaN or infinite (at positions "
                f"{pos}); {hint}."
            )
    return y


def check_images(images: Any, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        arr = np.asarray(images)
        if arr.dtype != np.uint8:
            raise DataError(
                f"Domain '{name}': images must be uint8 (0-255), got {arr.dtype}. Use "
                "tlkit.datasets.from_arrays(...), which converts float images in [0, 1] and "
                "16-bit images."
            )
        images = torch.from_numpy(np.ascontiguousarray(arr))
    if images.dtype != torch.uint8:
        raise DataError(
            f"Domain '{name}': images must be uint8 (0-255), got {images.dtype}. "
            "Use tlkit.datasets.from_arrays(...), which converts float images in [0, 1] and "
            "16-bit images."
        )
    if images.ndim == 3:  # (N, H, W) grayscale
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise DataError(
            f"Domain '{name}': images must have shape (N, C, H, W) or (N, H, W), "
            f"got {tuple(images.shape)}."
        )
    if images.shape[1] not in (1, 3):
        raise DataError(
            f"Domain '{name}': images must have 1 (grayscale) or 3 (RGB) channels, got "
            f"{images.shape[1]} (shape {tuple(images.shape)}). Channels-last arrays "
            "(N, H, W, C) go through tlkit.datasets.from_arrays(..., channels_last=True)."
        )
    return images.contiguous()


def check_inputs(inputs: Any, name: str) -> torch.Tensor:
    x = inputs.detach().cpu() if isinstance(inputs, torch.Tensor) else None
    if x is None:
        arr = np.asarray(inputs)
        if arr.dtype.kind not in "biuf":
            raise DataError(
                f"Domain '{name}': inputs must be numeric (float features or integer token "
                f"ids), got {arr.dtype}. Tokenise text first (tlkit.datasets.text.tokenize)."
            )
        x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.ndim < 1 or len(x) == 0:
        raise DataError(f"Domain '{name}': inputs need shape (N, ...) with N >= 1, got {x.shape}.")
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            raise DataError(
                f"Domain '{name}': inputs contain NaN or infinite values; impute or drop them "
                "first (e.g. replace NaN by the column mean)."
            )
        if x.dtype == torch.float64:
            x = x.float()
    elif x.dtype == torch.bool:
        x = x.float()
    else:
        x = x.long()
    if x.ndim == 1:
        x = x.unsqueeze(1)
    return x.contiguous()


def warn_sparse_classes(labels: torch.Tensor, name: str) -> None:
    """Warn when most class ids 0..max are never used: a stray label (99 among 0..9) silently
    builds a 100-class problem."""
    known = labels[labels != UNLABELLED]
    if not len(known):
        return
    k = int(known.max()) + 1
    used = len(known.unique())
    unused = k - used
    if unused >= max(2, math.ceil(k / 2)):
        top = int(known.max())
        count = int((known == top).sum())
        warnings.warn(
            f"Domain '{name}': labels use only {used} of the {k} class ids 0..{k - 1} (the "
            f"largest, {top}, appears {count} time(s)), so this is a {k}-class problem with "
            f"{unused} empty classes. If {top} is a stray label, fix it; otherwise pass "
            "classes=[...] naming every class to silence this warning.",
            DataWarning,
            stacklevel=3,
        )
