"""One Domain from the samples of several, whatever their backings, without reading a sample.

Active learning trains on a labelled seed set plus the pool samples labelled so far; the two
are different domains (``few_labels`` splits one), possibly image files. :func:`concat_domains`
joins them: in-memory tensors of one kind are concatenated into one tensor (the fast path stays
fast); anything else gets a :class:`ConcatBacking` that routes each index to its part, so files
are still decoded lazily in ``DataLoader`` workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .backing import Backing, TensorBacking
from .domain import DataError, Domain


class ConcatBacking(Backing):
    """Samples drawn from several backings: sample ``i`` is ``parts[part[i]]``'s ``local[i]``."""

    def __init__(self, parts: Sequence[Backing], part: np.ndarray, local: np.ndarray) -> None:
        self.parts = list(parts)
        self.part = np.asarray(part, dtype=np.int64)
        self.local = np.asarray(local, dtype=np.int64)
        self.modality = self.parts[0].modality
        self.kind = " + ".join(dict.fromkeys(p.kind for p in self.parts))

    @classmethod
    def of(cls, parts: Sequence[Backing]) -> ConcatBacking:
        """All samples of ``parts``, in order."""
        part = np.concatenate([np.full(len(p), k, dtype=np.int64) for k, p in enumerate(parts)])
        local = np.concatenate([np.arange(len(p), dtype=np.int64) for p in parts])
        return cls(parts, part, local)

    def __len__(self) -> int:
        return len(self.part)

    def take(self, idx: np.ndarray) -> ConcatBacking:
        idx = np.asarray(idx, dtype=np.int64)
        return ConcatBacking(self.parts, self.part[idx], self.local[idx])

    def load(self, i: int) -> torch.Tensor:
        return self.parts[int(self.part[i])].load(int(self.local[i]))

    def describe(self, i: int) -> str:
        return self.parts[int(self.part[i])].describe(int(self.local[i]))

    @property
    def paths(self) -> list[str] | None:
        if any(p.paths is None for p in self.parts):
            return None
        return [self.describe(i) for i in range(len(self))]


def concat_domains(
    domains: Sequence[Domain],
    labels: torch.Tensor | None = None,
    *,
    name: str | None = None,
    classes: Sequence[str] | None = None,
) -> Domain:
    """The samples of ``domains`` in order, as one Domain; nothing is read.

    ``labels`` replaces the training labels (default: each domain's own); the clean labels are
    kept. The domains must hold the same kind of inputs and be of one task.
    """
    if not domains:
        raise DataError("concat_domains needs at least one Domain.")
    first = domains[0]
    for d in domains[1:]:
        if d.modality != first.modality or d.task != first.task:
            raise DataError(
                f"cannot join '{d.name}' ({d.modality}, {d.task}) to '{first.name}' "
                f"({first.modality}, {first.task}): one model reads them, so they must be alike."
            )
    backings = [d.backing for d in domains]
    backing: Any
    tensors = [b.tensor for b in backings] if all(b.in_memory for b in backings) else None
    same = tensors is not None and all(
        t.dtype == tensors[0].dtype and t.shape[1:] == tensors[0].shape[1:] for t in tensors
    )
    if tensors is not None and same:
        backing = TensorBacking(torch.cat(tensors), first.modality)
    else:
        backing = ConcatBacking.of(backings)
    y = torch.cat([d.labels for d in domains]) if labels is None else torch.as_tensor(labels)
    info = {k: v for d in reversed(domains) for k, v in d.info.items()}
    return Domain(
        labels=y,
        clean_labels=torch.cat([d.clean_labels for d in domains]),
        classes=tuple(classes) if classes is not None else first.classes,
        name=name or first.name,
        task=first.task,
        backing=backing,
        image_size=first.image_size,
        info=info,
    )


__all__ = ["ConcatBacking", "concat_domains"]
