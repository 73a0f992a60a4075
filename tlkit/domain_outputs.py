"""A model's outputs and features on a Domain of any backing, read the way training reads it.

Label-issue detection, cross-validation, backbone ranking, active learning and the dashboard's
embedding all need a model's outputs on some samples of a :class:`~tlkit.datasets.Domain`. They
go through :func:`domain_outputs`, which hands the domain to the engine's one inference loop
(:func:`tlkit.engine.evaluate.predict`): in-memory tensors (images, feature rows, token ids) are
batched directly; image files and shards are decoded in ``DataLoader`` workers with the run's
evaluation transform (its image size and resize rule). Files that cannot be read are left out,
so the result carries the positions of the samples it covers.

Which backbone those features train when none is named, and the early refusal of one that
cannot read the data, are in :mod:`tlkit.backbone_choice`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from tlkit.datasets.domain import DataError, Domain
from tlkit.engine.evaluate import Predictions, predict


def model_view(model: Any) -> tuple[nn.Module, int | None, str]:
    """``(network, image size, resize rule)`` of a :class:`tlkit.Run` or a model: how its
    evaluation reads file-backed images (the run's training size, ``"crop"`` or ``"squash"``)."""
    net = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected a tlkit Run or an nn.Module, got {type(model).__name__}.")
    spec = getattr(model, "spec", None)
    spec = spec if isinstance(spec, dict) else {}
    backbone = getattr(net, "backbone", None)
    size = spec.get("image_size") or getattr(backbone, "input_size", None)
    return net, size, spec.get("resize", "crop")


def domain_outputs(
    model: Any,
    domain: Domain,
    indices: torch.Tensor | None = None,
    *,
    outputs: bool = True,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    image_size: int | None = None,
    resize: str | None = None,
) -> Predictions:
    """Features ``(M, D)`` and outputs ``(M, K)`` of ``model`` (a Run or a model) on the samples
    of ``domain`` at ``indices`` (all by default), in eval mode, on CPU.

    The result's ``indices`` are positions in ``domain`` (``M`` may be smaller than asked when
    files cannot be read). ``image_size`` and ``resize`` override the run's for file-backed
    images (a model still training has no run yet: its trainer knows them).
    """
    net, size, rule = model_view(model)
    modality = getattr(getattr(net, "backbone", None), "modality", None)
    if modality is not None and modality != domain.modality:
        raise DataError(
            f"the model reads {modality} inputs but '{domain.name}' holds {domain.modality} "
            "inputs; use a model trained on data like it."
        )
    part = domain if indices is None else domain.subset(indices)
    p = predict(
        net,
        part,
        batch_size=batch_size,
        device=device,
        outputs=outputs,
        image_size=image_size or size,
        num_workers=num_workers,
        resize=resize or rule,
    )
    where = p.indices if indices is None else torch.as_tensor(indices).long()[p.indices]
    return Predictions(p.features, p.outputs, where)


def worker_count(num_workers: Any) -> int:
    """A fit option's ``num_workers`` as a count for inference (``"auto"``: up to 4, as in
    training; in-memory data never uses workers)."""
    if isinstance(num_workers, int) and not isinstance(num_workers, bool):
        return max(0, num_workers)
    return min(4, os.cpu_count() or 1)


__all__ = ["domain_outputs", "model_view", "worker_count"]
