r"""DSBN: domain-specific batch normalisation, one set of BatchNorm statistics and affine
parameters per domain.

Chang, You, Seo, Kwak & Han, "Domain-Specific Batch Normalization for Unsupervised Domain
Adaptation", CVPR 2019.

A BatchNorm layer normalises a channel :math:`c` of its input :math:`h` with batch statistics in
training and running averages in evaluation, then applies an affine map. DSBN keeps a copy of both
per domain :math:`d \in \{S, T\}`:

.. math::
    \mathrm{DSBN}_d(h)_c = \gamma^d_c \, \frac{h_c - \mu^d_c}{\sqrt{(\sigma^d_c)^2 + \epsilon}}
      + \beta^d_c ,

where :math:`\mu^d, \sigma^d` are the statistics of domain :math:`d`'s batch in training and its
own running averages in evaluation; every other weight of the network is shared. Each domain is
thus normalised alone, like ``domain_bn="separate"``, and in addition evaluation uses the target's
*own* running statistics (with one set, the running averages mix both domains) and each domain
has its own :math:`\gamma, \beta`.

How tlkit runs it: DSBN needs the engine to run the backbone once per domain
(``fit(..., domain_bn="separate")``; it refuses ``"shared"``), and reads
:func:`tlkit.forward_domain` (``"source"`` / ``"target"``), which the engine sets for
each per-domain pass, for each held-out set's evaluation and for ``step.forward(x, domain=...)``.
The model's own BatchNorm layers are the **target** branch; the source branch (one
:math:`\gamma, \beta, \mu, \sigma` per layer) lives in a module the strategy returns from
``tlkit_setup``, so it is trained, checkpointed and restored with it, and it is swapped into a
layer only while that layer runs a ``"source"`` pass. Consequently the trained model that
``run.model``, ``run.save`` and ``tlkit.load`` hand out is the *target* model: ``run.evaluate``
on target data matches the history's ``target_accuracy``, while source data evaluated outside
the engine (no forward domain) is normalised with the target's statistics (the history's
``source_accuracy`` uses the source branch). Both branches start as copies of the model's
BatchNorm layers.

With ``ema=``, the averaged model is a copy made at the start: its source branch stays the
starting one, so only its target evaluations are meaningful.

Shapes: each BatchNorm layer of ``C`` channels gets a source copy of ``weight``, ``bias``
``(C,)``, ``running_mean``, ``running_var`` ``(C,)`` and ``num_batches_tracked``. Adds no loss;
combine it with an alignment method: ``adapt=["dsbn", "dann"]``.
"""

from __future__ import annotations

import torch
from torch import nn

import tlkit
from tlkit.strategy_tools import BATCHNORM_STATISTICS, DomainSwap, batchnorm_layers

_PARAMS = ("weight", "bias")


class SourceBranch(nn.Module):
    """The source copy of one BatchNorm layer's affine parameters and running statistics."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        for name in _PARAMS:
            value = getattr(bn, name, None)
            if value is not None:
                setattr(self, name, nn.Parameter(value.detach().clone()))
        for name in BATCHNORM_STATISTICS:
            value = getattr(bn, name, None)
            if value is not None:
                self.register_buffer(name, value.detach().clone())

    def tensors(self) -> dict[str, torch.Tensor]:
        """The branch's parameters and buffers by name: what a source pass runs with."""
        return {**self._parameters, **self._buffers}


class DSBN:
    """Domain-specific BatchNorm (Chang et al. 2019): BatchNorm statistics and affine per domain."""

    name = "dsbn"
    family = "adapt"
    needs_target = True  # the target batch must go through the network, as its own pass
    domain_bn = "separate"  # domain_bn="auto" gives the separate passes it needs
    keeps_domain_statistics = True  # its source branch holds the source's BatchNorm statistics
    needs_images = True  # the backbone's BatchNorm layers must run (no cached features)

    def __init__(self) -> None:
        self._swaps: list[DomainSwap] = []

    def state_dict(self) -> dict:
        return {}  # the source branch is a module: checkpointed with its weights

    def load_state_dict(self, state: dict) -> None:
        pass

    @tlkit.hookimpl
    def tlkit_setup(self, trainer) -> nn.Module:
        if trainer.config.domain_bn != "separate":
            raise ValueError(
                "dsbn normalises each domain with its own BatchNorm, so the backbone must see "
                "the source and target batches apart: pass domain_bn='separate' to fit()"
            )
        layers = batchnorm_layers(trainer.model.backbone)
        if not layers:
            raise ValueError(
                f"dsbn makes BatchNorm layers domain-specific, but the backbone "
                f"({trainer.model.backbone.name}) has none"
            )
        self._remove_hooks()
        branches = nn.ModuleList(SourceBranch(bn) for bn in layers)
        self._swaps = [DomainSwap(bn, branch.tensors) for bn, branch in zip(layers, branches)]
        return branches

    def _remove_hooks(self) -> None:
        for swap in self._swaps:
            swap.remove()
        self._swaps = []

    @tlkit.hookimpl
    def tlkit_on_fit_end(self) -> None:
        self._remove_hooks()  # the model handed out is the plain target model
