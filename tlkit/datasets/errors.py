"""The errors, warnings and small checks every data module shares (imports nothing of tlkit, so
the backings, decoders and loaders can use them without importing :mod:`.domain`)."""

from __future__ import annotations

from typing import Any

import numpy as np

UNLABELLED = -1
#: The largest image side a domain accepts as a training / materialisation size.
MAX_IMAGE_SIZE = 4096
MODALITIES = ("image", "tensor")


class DataError(ValueError):
    """Bad input data; the message names the problem and the fix."""


class DataWarning(UserWarning):
    """Suspicious but usable data (sparse class ids, skipped files...)."""


def check_image_size(image_size: Any, what: str = "image_size", allow_none: bool = True) -> Any:
    """A positive int no larger than :data:`MAX_IMAGE_SIZE` (or ``None``); else a DataError."""
    if image_size is None and allow_none:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise DataError(
            f"{what} must be a whole number of pixels (e.g. 224), got {image_size!r} "
            f"({type(image_size).__name__})."
        )
    if not 1 <= int(image_size) <= MAX_IMAGE_SIZE:
        raise DataError(
            f"{what}={int(image_size)} is out of range: use a side between 1 and "
            f"{MAX_IMAGE_SIZE} pixels (224 suits ImageNet backbones, 32-96 small images); a "
            f"{int(image_size)}x{int(image_size)} RGB image would take "
            f"{3 * int(image_size) ** 2 / 2**20:.1f} MiB."
        )
    return int(image_size)
