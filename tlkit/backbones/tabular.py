"""An MLP for tabular data: feature vectors ``(B, F)`` -> features ``(B, D)``.

Tabular columns come in wildly different units (wine's proline is ~1000, its hue ~1), and a
network trained on raw columns mostly learns their scales. So the first layer is a BatchNorm
without affine parameters: it standardises every column with running statistics learnt during
training and kept in the state dict, which means new rows need no separate scaler at prediction
time. Then ``Linear -> BatchNorm -> ReLU -> Dropout`` blocks. No pretrained weights: pretrain it
yourself on a related task (the two-stage recipe) when you want transfer.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from tlkit.backbones.base import Backbone


class MLP(nn.Module):
    """``(B, in_features) -> (B, hidden[-1])``; float inputs, standardised inside."""

    modality = "tensor"

    def __init__(
        self, in_features: int, hidden: Sequence[int] = (128, 128), dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.standardize = nn.BatchNorm1d(in_features, affine=False)
        widths = (in_features, *hidden)
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(dropout)
                )
                for a, b in itertools.pairwise(widths)
            )
        )
        self.in_features = in_features
        self.num_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"the mlp backbone expects feature vectors (B, {self.in_features}), got "
                f"{tuple(x.shape)}; build it with in_features= the number of columns."
            )
        return self.blocks(self.standardize(x.float() if not x.is_floating_point() else x))


def mlp(
    *,
    in_features: int | None = None,
    hidden: Sequence[int] = (128, 128),
    dropout: float = 0.1,
    pretrained: bool | str = "auto",
    input_size: int | None = None,
) -> Backbone:
    """Build the tabular MLP backbone (``in_features``: the number of columns, required)."""
    from tlkit.backbones import BackboneError

    if pretrained is True:
        raise BackboneError(
            "mlp has no pretrained weights; pass pretrained=False, or pretrain it on a related "
            "task first (tlkit's two-stage recipe) and load those weights with weights=."
        )
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise BackboneError(
            f"mlp needs in_features= (the number of feature columns, e.g. "
            f"domain.inputs.shape[1]; domain.backbone_kwargs() gives it), got {in_features!r}."
        )
    if not hidden or any(int(h) < 1 for h in hidden):
        raise BackboneError(f"mlp needs positive hidden widths, e.g. (128, 128); got {hidden!r}.")
    if not 0 <= dropout < 1:
        raise BackboneError(f"dropout must be in [0, 1), got {dropout!r}.")
    model = MLP(in_features, tuple(int(h) for h in hidden), dropout)
    backbone = Backbone(
        model,
        model.num_features,
        name="mlp",
        input_size=None,
        groups=list(model.blocks),
        pretrained=False,
        modality="tensor",
    )
    backbone.build_kwargs = {"in_features": in_features, "hidden": list(hidden), "dropout": dropout}
    return backbone
