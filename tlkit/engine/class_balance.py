"""Imbalanced classes: per-class loss weights (``class_weight=``), a class-balanced order of the
labelled source (``sampler="balanced"``), and the warning that suggests them.

Both look at the *training* labels of the labelled source (the labels the model learns from,
noisy ones included), never at test sets or the target.

* ``class_weight="balanced"`` gives class ``c`` the weight ``n / (K * n_c)`` (scikit-learn's
  rule: ``n`` labelled samples, ``K`` classes, ``n_c`` of class ``c``; a class without samples
  gets 0). A list (one weight per class, in class order) or a dict (by class name or index;
  classes left out weigh 1) gives weights of your own. The engine applies them to whatever
  per-sample losses the ``loss=`` strategy returns, as the weighted mean
  ``sum(w[y] * l) / sum(w[y])`` over the batch -- the convention of
  ``torch.nn.functional.cross_entropy(weight=...)`` -- so every classification loss is weighted
  the same way. Pseudo-labelled target batches are not weighted.
* ``sampler="balanced"``: each epoch draws as many samples as there are labelled ones, with
  replacement, each class equally likely (minority samples repeat, majority ones are skipped).
  The order is a function of ``(seed, epoch)``, in memory and for files alike, so a resumed run
  sees the same samples.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from tlkit import rng
from tlkit.datasets.domain import UNLABELLED, Domain, DomainPair
from tlkit.engine.config import FitConfig
from tlkit.errors import ConfigError

#: Warn when the largest class has more than this many times the samples of the smallest.
IMBALANCE_RATIO = 5.0
#: ... and the largest class has at least this many: with a handful of labels per class (the
#: first rounds of active learning, a few-shot split) a ratio such as 6:1 is sampling chance,
#: and weights of 6x drawn from it would be noisier than the imbalance.
IMBALANCE_MIN_LARGEST = 20


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labelled samples per class ``(K,)``; unlabelled samples are not counted."""
    known = labels[labels != UNLABELLED].long().cpu()
    return torch.bincount(known, minlength=num_classes)[:num_classes]


def balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``n / (K * n_c)`` per class, 0 for a class without labelled samples."""
    counts = class_counts(labels, num_classes).float()
    weights = counts.sum() / (num_classes * counts)
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def resolve_weights(value: Any, source: Domain, device: torch.device) -> torch.Tensor | None:
    """The weight of each class ``(K,)`` on ``device`` for ``class_weight=value`` (see the
    module docstring), checked against the source's classes."""
    if value is None:
        return None
    k = source.num_classes
    if value == "balanced":
        weights = balanced_weights(source.labels, k)
    elif isinstance(value, dict):
        names = [str(c) for c in source.classes] or [str(i) for i in range(k)]
        weights = torch.ones(k)
        for key, w in value.items():
            if str(key) in names:
                weights[names.index(str(key))] = float(w)
            elif str(key).isdigit() and int(key) < k:  # an index (a string from a file)
                weights[int(key)] = float(w)
            else:
                known = ", ".join(repr(n) for n in names)
                raise ConfigError(
                    f"class_weight names class {key!r}, which this task does not have; its "
                    f"classes are {known} (or their indices 0..{k - 1})."
                )
    else:
        if len(value) != k:
            raise ConfigError(
                f"class_weight has {len(value)} weights, but the task has {k} classes "
                f"({', '.join(map(str, source.classes))}); give one weight per class, in that "
                "order, or a dict {class name: weight}."
            )
        weights = torch.tensor([float(w) for w in value])
    return weights.to(device)


def weighted_mean(
    per_sample: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """The batch's supervised loss: the plain mean, or ``sum(w[y] * l) / sum(w[y])``."""
    per_sample = per_sample.float()
    if weights is None:
        return per_sample.mean()
    w = weights[labels]
    return (per_sample * w).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)


def balanced_order(
    labels: torch.Tensor, labelled: torch.Tensor, seed: int, epoch: int
) -> torch.Tensor:
    """``len(labelled)`` positions drawn from ``labelled`` with replacement, each class equally
    likely; a pure function of ``(seed, epoch)``."""
    y = labels[labelled].long().cpu()
    counts = torch.bincount(y)
    p = 1.0 / counts[y].double()
    g = torch.Generator().manual_seed(rng.balanced_order_seed(seed, epoch))
    return labelled[torch.multinomial(p, len(labelled), replacement=True, generator=g)]


def setup(config: FitConfig, data: DomainPair, device: torch.device) -> torch.Tensor | None:
    """Check ``class_weight`` / ``sampler`` against the task, warn about badly imbalanced
    classes when neither is set, and return the class weights (or ``None``)."""
    asked = [
        name
        for name, on in (
            ("class_weight", config.class_weight is not None),
            ("sampler", config.sampler == "balanced"),
        )
        if on
    ]
    if data.task != "classification":
        if asked:
            raise ConfigError(
                f"{asked[0]}= balances classes, which a {data.task} task does not have; "
                "it applies to classification only."
            )
        return None
    if data.source_free:
        if asked:
            raise ConfigError(
                f"{asked[0]}= balances the labelled source, which a source-free run does not "
                "have; drop it."
            )
        return None
    if not asked:
        warn_if_imbalanced(data.source)
    return resolve_weights(config.class_weight, data.source, device)


def warn_if_imbalanced(source: Domain) -> None:
    """A warning naming both remedies when the largest class has more than
    :data:`IMBALANCE_RATIO` times the labelled samples of the smallest and at least
    :data:`IMBALANCE_MIN_LARGEST` of its own."""
    counts = class_counts(source.labels, source.num_classes)
    present = counts[counts > 0]
    if len(present) < 2:
        return
    big, small = int(present.max()), int(present.min())
    if big <= IMBALANCE_RATIO * small or big < IMBALANCE_MIN_LARGEST:
        return
    names = [str(c) for c in source.classes] or [str(i) for i in range(len(counts))]
    most = names[int(counts.argmax())]
    least = names[int(torch.where(counts > 0, counts, counts.max() + 1).argmin())]
    warnings.warn(
        f"classes are imbalanced in the labelled training data of '{source.name}': '{most}' has "
        f"{big} samples, '{least}' {small} ({big / small:.0f}x). The model may learn to favour "
        "the large classes; pass class_weight='balanced' (weights the loss by inverse class "
        "frequency) or sampler='balanced' (draws every class equally often).",
        UserWarning,
        stacklevel=_user_level(),
    )


def _user_level() -> int:
    """The ``stacklevel`` of the first frame outside tlkit (the user's ``fit`` call), so the
    warning points at the line that started the run."""
    root = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(root):
        frame, level = frame.f_back, level + 1
    return level
