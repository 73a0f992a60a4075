"""DomainPair: one transfer task -- a labelled source, an optional unlabelled target, and
their test sets (see :mod:`tlkit.datasets.domain`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import DataError
from .samples import Domain


@dataclass(frozen=True, eq=False)
class DomainPair:
    """One transfer task: labelled source, optional unlabelled target, and their test sets.

    For domain adaptation ``target`` holds target-domain samples with hidden labels; for
    semi-supervised learning it holds the unlabelled pool of the *same* domain; for plain
    supervised fine-tuning it is ``None``. An unlabelled part built without class names (e.g.
    ``from_folder(path, labels=False)``) takes the source's classes.
    """

    source: Domain
    source_test: Domain | None = None
    target: Domain | None = None
    target_test: Domain | None = None
    name: str = "task"
    source_free: bool = False

    @classmethod
    def without_source(
        cls,
        target: Domain,
        target_test: Domain | None = None,
        *,
        classes: Sequence[str] | None = None,
        name: str | None = None,
    ) -> DomainPair:
        """A source-free task: only unlabelled target data (and optionally its test set), for
        adapting a model trained elsewhere (``tlkit.fit(..., source_free=True)``). ``classes``
        names the model's outputs when the target does not."""
        if not isinstance(target, Domain):
            raise DataError(
                f"a source-free task needs the target as a Domain, got {type(target).__name__}."
            )
        if classes is not None and not target.classes:
            target = target.with_classes(classes)
        return cls(
            source=target,
            target=target,
            target_test=target_test,
            name=name or f"{target.name} (source-free)",
            source_free=True,
        )

    def __post_init__(self) -> None:
        src = self.source
        if not isinstance(src, Domain):
            raise DataError(
                f"Task '{self.name}': source must be a tlkit.datasets.Domain, got "
                f"{type(src).__name__}."
            )
        if len(src) == 0:
            raise DataError(f"Task '{self.name}': the source domain is empty; it needs samples.")
        if self.source_free and self.target is None:
            raise DataError(f"Task '{self.name}': a source-free task needs a target.")
        if src.task == "classification" and not self.source_free:
            if src.num_labelled == 0:
                raise DataError(
                    f"Task '{self.name}': the source domain has no labelled samples; "
                    "training needs at least one labelled sample per class."
                )
            present = src.labels[src.labelled_mask].unique()
            if len(present) < 2:
                c = int(present[0])
                cname = src.classes[c] if c < len(src.classes) else str(c)
                raise DataError(
                    f"Task '{self.name}': every labelled source sample is of one class "
                    f"('{cname}'); a classifier needs at least two classes, or it reaches loss 0 "
                    "without learning anything. Add labelled samples of the other classes (for "
                    "a folder: one sub-folder per class), or use task='regression'."
                )
        for part in ("source_test", "target", "target_test"):
            d = getattr(self, part)
            if d is None:
                continue
            if not isinstance(d, Domain):
                raise DataError(
                    f"Task '{self.name}': {part} must be a tlkit.datasets.Domain or None, got "
                    f"{type(d).__name__}."
                )
            if len(d) == 0:
                raise DataError(
                    f"Task '{self.name}': the {part} split is empty. Pass None to leave it out, "
                    "or give it samples."
                )
            if d.modality != src.modality:
                raise DataError(
                    f"Task '{self.name}': {part} holds {d.modality} inputs but the source holds "
                    f"{src.modality} inputs; one network reads both, so they must be alike."
                )
            both = d.task == "classification" and src.task == "classification"
            if both and not d.classes and d.num_labelled == 0 and not d.has_clean_labels:
                d = d.with_classes(src.classes or [str(i) for i in range(src.num_classes)])
                object.__setattr__(self, part, d)
            if both and d.num_classes != src.num_classes:
                raise DataError(
                    f"Task '{self.name}': {part} has {d.num_classes} classes but the source has "
                    f"{src.num_classes}; both domains must share one label set."
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

    @property
    def modality(self) -> str:
        return self.source.modality

    def eval_sets(self) -> dict[str, Domain]:
        """The held-out sets the engine reports on each epoch, by metric prefix."""
        sets = {}
        if self.source_test is not None:
            sets["source"] = self.source_test
        if self.target_test is not None and self.target_test is not self.source_test:
            sets["target"] = self.target_test
        return sets
