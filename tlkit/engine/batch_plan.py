"""How an epoch's samples are cut into training batches.

Transfer learning is the small-data case, so every sample trains every epoch: the last batch of
an epoch is smaller when the batch size does not divide the data. The one exception is a last
batch of a single sample, which BatchNorm cannot normalise in train mode (torch raises): it joins
the batch before it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

#: The largest batch ``batch_size="auto"`` picks.
AUTO_BATCH_SIZE = 64
#: ``batch_size="auto"`` is never more than this fraction of the training samples.
AUTO_BATCH_FRACTION = 4


def auto_batch_size(n: int) -> int:
    """``batch_size="auto"`` for ``n`` training samples: 64, but never more than a quarter of
    them, so that an epoch of a small set is several optimiser steps (96 photos: 24 a batch, 4
    steps) rather than one; at least 2, as BatchNorm needs two samples to normalise."""
    return max(2, min(AUTO_BATCH_SIZE, n // AUTO_BATCH_FRACTION))


def resolve_batch_size(batch_size: int | str, n: int) -> int:
    """The training batch size: ``batch_size`` itself, or :func:`auto_batch_size` of ``n``."""
    return auto_batch_size(n) if batch_size == "auto" else int(batch_size)


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The sizes of one epoch's batches over ``n`` samples: full batches, then the remainder
    (a remainder of one sample joins the previous batch). ``[]`` when ``n`` is 0."""
    if n <= 0:
        return []
    sizes = [batch_size] * (n // batch_size)
    rest = n - batch_size * len(sizes)
    if rest == 1 and sizes and batch_size > 1:
        sizes[-1] += 1
    elif rest:
        sizes.append(rest)
    return sizes


def split(order: torch.Tensor, sizes: list[int]) -> Iterator[torch.Tensor]:
    """``order`` cut into consecutive chunks of ``sizes`` (the last ones shorter, or empty, when
    ``order`` runs out)."""
    start = 0
    for size in sizes:
        yield order[start : start + size]
        start += size
