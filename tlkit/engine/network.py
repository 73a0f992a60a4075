"""The network a run trains: the model built for the data, and what one forward call runs.

``build_model`` makes (or checks) the :class:`~tlkit.backbones.TransferModel` -- a backbone by
name, sized for the data (an MLP's input width, a text encoder's vocabulary), and a head with one
output per class or regression target. :class:`Network` is what DDP and ``torch.compile`` wrap:
backbone (skipped while frozen features are cached) and head, with the source and target batches
in one call.
"""

from __future__ import annotations

import torch
from torch import nn

from tlkit.backbones import create_model
from tlkit.backbones.base import TransferModel
from tlkit.backbones.target_scale import fit_target_scale
from tlkit.datasets.domain import DataError, DomainPair
from tlkit.datasets.sizing import requested_image_size
from tlkit.engine.config import FitConfig, check_backbone_fits
from tlkit.step import domain_context


def build_model(
    model: TransferModel | nn.Module | None, config: FitConfig, data: DomainPair
) -> TransferModel:
    """``model`` if it is a ready TransferModel for this data; else one built from ``model`` (an
    ``nn.Module``) or ``config.backbone``, with a fresh head. Mismatches are explained."""
    out, task = data.num_classes, data.task
    if model is None:
        check_backbone_fits(config.backbone, data.modality, data.source.backbone_kwargs())
    if model is None or not isinstance(model, TransferModel):
        model = create_model(
            model if model is not None else config.backbone,
            out,
            task=task,
            pretrained=config.pretrained,
            dropout=config.dropout,
            weights=config.backbone_weights,
            input_size=requested_image_size(config.image_size, data),  # image_size=, or the data's
            **data.source.backbone_kwargs(),  # an MLP's width, a text encoder's vocabulary
        )
    if model.out_features != out:
        what = "classes" if task == "classification" else "regression outputs"
        raise DataError(
            f"the model's head has {model.out_features} outputs but the data has {out} {what}. "
            f"Build the model for {out} outputs (tlkit.backbones.create_model(..., "
            f"num_classes={out})) or let fit() build it."
        )
    if model.task != task:
        raise DataError(f"the model is built for {model.task} but the data is a {task} task.")
    if task == "regression" and data.source is not None:
        fit_target_scale(model, data.source.labels)  # the training split's mean and std
    return model


class Network(nn.Module):
    """What one forward call runs (and DDP wraps): backbone (unless features are cached) + head.

    ``inputs`` are the source batch followed by the target batch (``n_source`` rows of source).
    With ``separate_domains`` the backbone runs once per domain, so BatchNorm normalises each
    with its own batch statistics -- still one forward call, as DDP requires.
    """

    def __init__(self, model: TransferModel, separate_domains: bool = False) -> None:
        super().__init__()
        self.model = model
        self.cached = False
        self.backbone_trainable = True
        self.separate_domains = separate_domains

    def forward(
        self, inputs: torch.Tensor, n_source: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cached:
            features = inputs
        else:
            with torch.set_grad_enabled(self.backbone_trainable and torch.is_grad_enabled()):
                if n_source is None:  # extra views (Step.forward): the caller says whose
                    features = self.model.backbone(inputs)
                else:
                    features = self._features(inputs, n_source)
        return features, self.model.head(features)

    def _features(self, inputs: torch.Tensor, n: int) -> torch.Tensor:
        if n == len(inputs) or n == 0:  # one domain only (n == 0: a source-free step)
            with domain_context("source" if n else "target"):
                return self.model.backbone(inputs)
        if not self.separate_domains:
            return self.model.backbone(inputs)  # both domains in one BatchNorm batch
        with domain_context("source"):
            source = self.model.backbone(inputs[:n])
        with domain_context("target"):
            target = self.model.backbone(inputs[n:])
        return torch.cat([source, target])
