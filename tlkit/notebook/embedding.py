"""The features behind the dashboard's embedding view, for a task of any backing.

A sample of each of the task's held-out sets (or of its training parts when it has none) is read
the way the model's evaluation reads it (:func:`tlkit.domain_outputs.domain_outputs`: in-memory
tensors directly, image files and shards decoded at the training size), so the embedding works
on photo folders, CSV manifests, shards, feature rows and token ids alike.
"""

from __future__ import annotations

from typing import Any

import torch

from tlkit.datasets.domain import DomainPair
from tlkit.domain_outputs import domain_outputs


def embedding_features(
    model: Any,
    task: DomainPair,
    *,
    per_domain: int = 300,
    image_size: int | None = None,
    resize: str | None = None,
    num_workers: int = 0,
) -> tuple[torch.Tensor, list[str]]:
    """Backbone features ``(M, D)`` of up to ``per_domain`` samples each of the source and the
    target (their test sets when the task has them), drawn with a fixed seed, and the group name
    (``"source"`` / ``"target"``) of each row. Unreadable files are left out."""
    feats, groups = [], []
    for name in ("source", "target"):
        domain = getattr(task, f"{name}_test")
        domain = domain if domain is not None else getattr(task, name)
        if domain is None:
            continue
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(domain), generator=g)[:per_domain]
        p = domain_outputs(
            model, domain, idx, outputs=False, image_size=image_size, resize=resize,
            num_workers=num_workers,
        )  # fmt: skip
        feats.append(p.features)
        groups += [name] * len(p.indices)
    return torch.cat(feats), groups


__all__ = ["embedding_features"]
