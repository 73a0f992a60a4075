"""Domain and DomainPair: the two data shapes the engine trains on.

A :class:`Domain` is a set of images from one distribution, held in memory as a ``uint8`` tensor
``(N, C, H, W)``. Labels live next to them in two forms:

* ``labels`` -- what training may see. ``-1`` marks an unlabelled sample (classification).
* ``clean_labels`` -- the truth, kept for evaluation even after noise injection or when labels are
  hidden, so that "accuracy on clean labels" and "pseudo-label accuracy" can be measured.

A :class:`DomainPair` is one transfer task: a labelled ``source`` to learn from, an optional
unlabelled ``target`` to adapt to (or the unlabelled pool of a semi-supervised task), and held-out
test sets for both. Single-domain tasks are pairs without a target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

UNLABELLED = -1


class DataError(ValueError):
    """Bad input data; the message names the problem and the fix."""


@dataclass(frozen=True, eq=False)
class Domain(torch.utils.data.Dataset):
    """Images of one domain with training labels and the clean labels behind them.

    Args:
        images: ``uint8`` tensor ``(N, C, H, W)`` with C in {1, 3}.
        labels: ``int64`` ``(N,)`` class ids, ``-1`` for unlabelled; or ``float32`` ``(N,)`` /
            ``(N, D)`` targets for regression.
        clean_labels: the true labels (defaults to ``labels``).
        classes: class names (classification); empty for regression.
        name: a short name shown in tables and plots.
        task: ``"classification"`` or ``"regression"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    clean_labels: torch.Tensor | None = None
    classes: tuple[str, ...] = ()
    name: str = "domain"
    task: str = "classification"

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor):
            images = torch.as_tensor(np.asarray(images))
        if images.dtype != torch.uint8:
            raise DataError(
                f"Domain '{self.name}': images must be uint8 (0-255), got {images.dtype}. "
                "Use tlkit.datasets.from_arrays(...), which converts float images in [0, 1]."
            )
        if images.ndim == 3:  # (N, H, W) grayscale
            images = images.unsqueeze(1)
        if images.ndim != 4:
            raise DataError(
                f"Domain '{self.name}': images must have shape (N, C, H, W) or (N, H, W), "
                f"got {tuple(images.shape)}."
            )
        if images.shape[1] not in (1, 3):
            raise DataError(
                f"Domain '{self.name}': images must have 1 (grayscale) or 3 (RGB) channels, got "
                f"{images.shape[1]} (shape {tuple(images.shape)}). Channels-last arrays "
                "(N, H, W, C) go through tlkit.datasets.from_arrays(..., channels_last=True)."
            )
        if self.task not in ("classification", "regression"):
            raise DataError(f"task must be 'classification' or 'regression', got {self.task!r}.")
        labels = torch.as_tensor(labels)
        if self.task == "classification":
            if labels.is_floating_point():
                if not torch.equal(labels, labels.round()):
                    raise DataError(
                        f"Domain '{self.name}': classification labels must be integers; got "
                        "fractional values. For continuous targets use task='regression'."
                    )
            labels = labels.long()
        else:
            labels = labels.float()
        if len(labels) != len(images):
            raise DataError(
                f"Domain '{self.name}': {len(images)} images but {len(labels)} labels; "
                "give one label per image."
            )
        if self.task == "classification" and labels.ndim != 1:
            raise DataError(
                f"Domain '{self.name}': classification labels must be one class id per image, "
                f"shape (N,); got {tuple(labels.shape)}. Flatten them (labels.reshape(-1))."
            )
        clean = self.clean_labels
        clean = labels.clone() if clean is None else torch.as_tensor(clean).to(labels.dtype)
        if clean.shape != labels.shape:
            raise DataError(
                f"Domain '{self.name}': clean_labels has shape {tuple(clean.shape)} but labels "
                f"has {tuple(labels.shape)}; give one clean label per image."
            )
        object.__setattr__(self, "images", images.contiguous())
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "clean_labels", clean)
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.task == "classification" and len(labels):
            known = labels[labels != UNLABELLED]
            n = self.num_classes
            if len(known) and (known.min() < 0 or known.max() >= n):
                bad = known[(known < 0) | (known >= n)].unique()[:5].tolist()
                raise DataError(
                    f"Domain '{self.name}': labels {bad} are outside [0, {n}) for "
                    f"{n} classes. Labels must be class ids 0..{n - 1} (or -1 for unlabelled); "
                    "pass classes=[...] naming every class."
                )

    # -- basic facts ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float().div_(255), self.labels[index]

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        extra = ""
        if self.task == "classification":
            extra = f", classes={self.num_classes}, labelled={self.num_labelled}"
            if self.noise_rate > 0:
                extra += f", noise={self.noise_rate:.0%}"
        return f"Domain('{self.name}', n={len(self)}, image={c}x{h}x{w}{extra})"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        if self.task == "regression":
            return 1 if self.labels.ndim == 1 else self.labels.shape[1]
        if self.classes:
            return len(self.classes)
        return int(self.clean_labels.max()) + 1 if len(self.clean_labels) else 0

    @property
    def labelled_mask(self) -> torch.Tensor:
        if self.task == "regression":
            return torch.ones(len(self), dtype=torch.bool)
        return self.labels != UNLABELLED

    @property
    def num_labelled(self) -> int:
        return int(self.labelled_mask.sum())

    @property
    def noise_rate(self) -> float:
        """Fraction of labelled samples whose training label differs from the clean one."""
        if self.task == "regression":
            return 0.0
        m = self.labelled_mask
        return float((self.labels[m] != self.clean_labels[m]).float().mean()) if m.any() else 0.0

    # -- derived domains -----------------------------------------------------------------------
    def subset(self, indices: Sequence[int] | torch.Tensor, name: str | None = None) -> Domain:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            clean_labels=self.clean_labels[idx],
            name=name or self.name,
        )

    def with_labels(self, labels: torch.Tensor, name: str | None = None) -> Domain:
        """Same images and clean labels, new training labels (noise, hidden labels...)."""
        return replace(self, labels=torch.as_tensor(labels), name=name or self.name)

    def unlabelled(self, name: str | None = None) -> Domain:
        """Hide every training label (the clean ones stay for evaluation)."""
        if self.task == "regression":
            raise DataError("Regression domains cannot be unlabelled in this version of tlkit.")
        return self.with_labels(torch.full_like(self.labels, UNLABELLED), name)

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[Domain, Domain]:
        """Stratified train/test split, deterministic for ``seed``.

        Stratifies by the *clean* label, so a noisy-label benchmark splits the same way as its
        clean version; every class with two or more samples keeps one on each side.
        """
        if len(self) < 2:
            raise DataError(f"Domain '{self.name}' has {len(self)} samples; cannot split it.")
        if not 0 < test_fraction < 1:
            raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}.")
        g = torch.Generator().manual_seed(seed)
        if self.task == "regression":
            perm = torch.randperm(len(self), generator=g)
            n_test = max(1, round(len(self) * test_fraction))
            return self.subset(perm[n_test:]), self.subset(perm[:n_test], f"{self.name}-test")
        train_idx, test_idx = [], []
        for c in self.clean_labels.unique():
            idx = (self.clean_labels == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            n_test = round(len(idx) * test_fraction)
            if len(idx) >= 2:
                n_test = min(max(n_test, 1), len(idx) - 1)
            test_idx.append(idx[:n_test])
            train_idx.append(idx[n_test:])
        train = torch.cat(train_idx).sort().values
        test = torch.cat(test_idx).sort().values
        return self.subset(train), self.subset(test, f"{self.name}-test")


@dataclass(frozen=True, eq=False)
class DomainPair:
    """One transfer task: labelled source, optional unlabelled target, and their test sets.

    For domain adaptation ``target`` holds target-domain images with hidden labels; for
    semi-supervised learning it holds the unlabelled pool of the *same* domain; for plain
    supervised fine-tuning it is ``None``.
    """

    source: Domain
    source_test: Domain | None = None
    target: Domain | None = None
    target_test: Domain | None = None
    name: str = "task"

    def __post_init__(self) -> None:
        if len(self.source) == 0:
            raise DataError(f"Task '{self.name}': the source domain is empty; it needs samples.")
        if self.source.task == "classification" and self.source.num_labelled == 0:
            raise DataError(
                f"Task '{self.name}': the source domain has no labelled samples; "
                "training needs at least one labelled sample per class."
            )
        for part in ("source_test", "target", "target_test"):
            d = getattr(self, part)
            if d is not None and len(d) == 0:
                raise DataError(
                    f"Task '{self.name}': the {part} split is empty. Pass None to leave it out, "
                    "or give it samples."
                )
            if (
                d is not None
                and d.task == "classification"
                and self.source.task == "classification"
                and d.num_classes != self.source.num_classes
            ):
                raise DataError(
                    f"Task '{self.name}': {part} has {d.num_classes} classes but the source has "
                    f"{self.source.num_classes}; both domains must share one label set."
                )

    def __repr__(self) -> str:
        parts = [f"source={self.source!r}"]
        for part in ("source_test", "target", "target_test"):
            d = getattr(self, part)
            if d is not None:
                parts.append(f"{part}={d!r}")
        return f"DomainPair('{self.name}',\n  " + ",\n  ".join(parts) + ")"

    @property
    def task(self) -> str:
        return self.source.task

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def classes(self) -> tuple[str, ...]:
        return self.source.classes

    def eval_sets(self) -> dict[str, Domain]:
        """The held-out sets the engine reports on each epoch, by metric prefix."""
        sets = {}
        if self.source_test is not None:
            sets["source"] = self.source_test
        if self.target_test is not None and self.target_test is not self.source_test:
            sets["target"] = self.target_test
        return sets
