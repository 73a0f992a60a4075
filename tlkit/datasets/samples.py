"""Domain: a set of samples from one distribution, and its labels (see :mod:`tlkit.datasets.domain`
for the data model; :class:`~tlkit.datasets.pair.DomainPair` combines domains into a task)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .backing import Backing, TensorBacking, check_files
from .errors import UNLABELLED, DataError, check_image_size
from .loader import DomainDataset, StreamDataset, materialize
from .validate import as_label_tensor, check_images, check_inputs


@dataclass(frozen=True, eq=False, init=False)
class Domain(torch.utils.data.Dataset):
    """Samples of one domain with training labels and the clean labels behind them.

    Args:
        images: ``uint8`` tensor ``(N, C, H, W)`` with C in {1, 3} (an in-memory image domain).
        labels: ``int64`` ``(N,)`` class ids, ``-1`` for unlabelled; or ``float32`` ``(N,)`` /
            ``(N, D)`` targets for regression. ``None``: every sample unlabelled.
        clean_labels: the true labels (defaults to ``labels``).
        classes: class names (classification); empty for regression.
        name: a short name shown in tables and plots.
        task: ``"classification"`` or ``"regression"``.
        inputs: instead of ``images``, any in-memory per-sample tensor ``(N, ...)`` (float feature
            vectors, int64 token ids): a ``"tensor"`` domain.
        backing: instead of either, a :class:`~tlkit.datasets.backing.Backing` (files, shards...).
        image_size: the size these images train at unless ``fit(image_size=)`` says otherwise
            (``None``: the backbone's input size, see :mod:`tlkit.datasets.sizing`).
        info: facts about the inputs that backbones need (``vocab_size``, ``padding_id``,
            ``feature_names``...), carried through subsets and splits.

    ``images`` and ``inputs`` are constructor arguments, not fields: ``dataclasses.replace(d,
    labels=...)`` keeps the backing without reading it, and ``d.images`` is a property that
    explains itself for file-backed and tensor domains.
    """

    labels: torch.Tensor
    clean_labels: torch.Tensor
    classes: tuple[str, ...]
    name: str
    task: str
    backing: Backing
    image_size: int | None
    info: Mapping[str, Any]

    def __init__(
        self,
        images: Any = None,
        labels: Any = None,
        clean_labels: Any = None,
        classes: Sequence[str] = (),
        name: str = "domain",
        task: str = "classification",
        *,
        inputs: Any = None,
        backing: Backing | None = None,
        image_size: int | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "name", str(name))
        set_(self, "task", task)
        if task not in ("classification", "regression"):
            raise DataError(f"task must be 'classification' or 'regression', got {task!r}.")
        if images is not None:
            backing = TensorBacking(check_images(images, self.name), "image")
        elif inputs is not None:
            backing = TensorBacking(check_inputs(inputs, self.name), "tensor")
        elif backing is None:
            raise DataError(
                f"Domain '{self.name}' has no data: pass images (uint8 (N, C, H, W)), inputs "
                "(any (N, ...) tensor) or build it with tlkit.datasets.from_folder / from_arrays."
            )
        set_(self, "labels", labels)
        set_(self, "clean_labels", clean_labels)
        set_(self, "classes", tuple(classes or ()))
        set_(self, "backing", backing)
        set_(self, "image_size", image_size)
        set_(self, "info", dict(info or {}))
        self._validate()

    def _validate(self) -> None:
        backing = self.backing
        n = len(backing)
        labels = self.labels
        if labels is None:
            if self.task != "classification":
                raise DataError(f"Domain '{self.name}': regression needs targets; pass labels=...")
            labels = torch.full((n,), UNLABELLED, dtype=torch.long)
        labels = as_label_tensor(labels, self.name, self.task)
        if self.task == "classification":
            if labels.is_floating_point() and not torch.equal(labels, labels.round()):
                raise DataError(
                    f"Domain '{self.name}': classification labels must be integers; got "
                    "fractional values. For continuous targets use task='regression'."
                )
            labels = labels.long()
        else:
            labels = labels.float()
        if labels.ndim == 0 or len(labels) != n:
            got = 1 if labels.ndim == 0 else len(labels)
            raise DataError(
                f"Domain '{self.name}': {n} samples but {got} labels; give one label per sample."
            )
        if self.task == "classification" and labels.ndim != 1:
            raise DataError(
                f"Domain '{self.name}': classification labels must be one class id per sample, "
                f"shape (N,); got {tuple(labels.shape)}. Flatten them (labels.reshape(-1))."
            )
        clean = self.clean_labels
        if clean is None:
            clean = labels.clone()
        else:
            clean = as_label_tensor(clean, self.name, self.task).to(labels.dtype)
        if clean.shape != labels.shape:
            raise DataError(
                f"Domain '{self.name}': clean_labels has shape {tuple(clean.shape)} but labels "
                f"has {tuple(labels.shape)}; give one clean label per sample."
            )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "clean_labels", clean)
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", check_image_size(self.image_size))
        if self.task == "classification" and len(labels):
            k = self.num_classes
            for what, ys in (("labels", labels), ("clean_labels", clean)):
                known = ys[ys != UNLABELLED]
                if len(known) and (known.min() < 0 or known.max() >= k):
                    bad = known[(known < 0) | (known >= k)].unique()[:5].tolist()
                    raise DataError(
                        f"Domain '{self.name}': {what} {bad} are outside [0, {k}) for "
                        f"{k} classes. Labels must be class ids 0..{k - 1} (or -1 for "
                        "unlabelled); pass classes=[...] naming every class."
                    )

    # -- basic facts ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, label)``: images as float [0, 1] (native size for files), tensors as they are."""
        x = self.backing.load(int(index))
        if self.modality == "image":
            x = x.float().div_(255)
        return x, self.labels[index]

    def __repr__(self) -> str:
        if self.modality == "image" and self.in_memory:
            c, h, w = self.image_shape
            what = f"image={c}x{h}x{w}"
        elif self.modality == "image":
            what = f"{self.backing.kind}, decoded lazily"
        else:
            what = f"inputs={'x'.join(map(str, self.input_shape))} {self.backing.tensor.dtype}"
        extra = ""
        if self.task == "classification":
            extra = f", classes={self.num_classes}, labelled={self.num_labelled}"
            if self.noise_rate > 0:
                extra += f", noise={self.noise_rate:.0%}"
        else:
            extra = ", regression"
        return f"Domain('{self.name}', n={len(self)}, {what}{extra})"

    @property
    def images(self) -> torch.Tensor:
        """``uint8`` images ``(N, C, H, W)`` of an in-memory image domain (as before backings)."""
        backing = self.backing
        if backing.modality != "image":
            raise DataError(
                f"Domain '{self.name}' holds tensor inputs ({backing.tensor.dtype}, shape "
                f"{tuple(backing.tensor.shape)}), not images. Use d.inputs; image-only features "
                "(augmentation, image transforms, pixel-level adaptation) do not apply to it."
            )
        if not backing.in_memory:
            raise DataError(
                f"Domain '{self.name}' is backed by {backing.kind}, decoded lazily: it has no image "
                "tensor. Read images with d.dataset(transform) in a DataLoader (each file decoded in "
                "a worker at its native size), or decode everything into memory once with "
                "d.materialize(image_size) (about 3 * image_size**2 bytes per image)."
            )
        return backing.tensor

    @property
    def inputs(self) -> torch.Tensor:
        """The in-memory per-sample tensor ``(N, ...)``: images, features or token ids."""
        if not self.in_memory:
            raise DataError(
                f"Domain '{self.name}' is backed by {self.backing.kind} decoded on demand; it has "
                "no in-memory tensor. Read samples with d.dataset(transform) in a DataLoader, or "
                "decode everything once with d.materialize(image_size)."
            )
        return self.backing.tensor

    @property
    def modality(self) -> str:
        """``"image"`` (uint8 images, in memory or files) or ``"tensor"`` (any other inputs)."""
        return self.backing.modality

    @property
    def in_memory(self) -> bool:
        """True when the inputs are one tensor in memory (``d.inputs``); False for files."""
        return self.backing.in_memory

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of in-memory images (files have no single shape: DataError)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one sample for in-memory data; ``None`` for files (sizes vary)."""
        return tuple(self.backing.tensor.shape[1:]) if self.in_memory else None

    @property
    def paths(self) -> list[str]:
        """One file path (or ``shard.tar:key``) per sample, for predictions tables."""
        paths = self.backing.paths
        if paths is None:
            raise DataError(
                f"Domain '{self.name}' is held in memory ({self.backing.kind}); it has no file "
                "paths. Index samples by position instead."
            )
        return paths

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
    def has_clean_labels(self) -> bool:
        """Whether every sample's true label is known (False for data that never had labels)."""
        return self.task == "regression" or bool((self.clean_labels != UNLABELLED).all())

    @property
    def noise_rate(self) -> float:
        """Fraction of labelled samples whose training label differs from the clean one."""
        if self.task == "regression":
            return 0.0
        m = self.labelled_mask
        return float((self.labels[m] != self.clean_labels[m]).float().mean()) if m.any() else 0.0

    def backbone_kwargs(self) -> dict[str, Any]:
        """What a tensor backbone needs to read this domain: ``{"in_features": D}`` for float
        feature vectors (``mlp``), ``{"vocab_size": V, "padding_id": 0}`` for token ids
        (``text_bag`` / ``text_cnn`` / ``text_lstm`` / ``text_gru``), with ``"tokenizer"`` when
        the ids came from a :class:`tlkit.Tokenizer`; ``{}`` for images."""
        if self.modality != "tensor":
            return {}
        x = self.backing.tensor
        if x.is_floating_point():
            return {"in_features": int(x[0].numel())}
        vocab = self.info.get("vocab_size") or int(x.max()) + 1
        out = {"vocab_size": int(vocab), "padding_id": int(self.info.get("padding_id", 0))}
        if self.info.get("tokenizer") is not None:  # kept by the backbone, saved with the run
            out["tokenizer"] = self.info["tokenizer"]
        return out

    # -- derived domains (labels only: no image is read) --------------------------------------
    def subset(self, indices: Sequence[int] | torch.Tensor, name: str | None = None) -> Domain:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return replace(
            self,
            backing=self.backing.take(idx.numpy()),
            labels=self.labels[idx],
            clean_labels=self.clean_labels[idx],
            name=name or self.name,
        )

    def with_labels(self, labels: torch.Tensor, name: str | None = None) -> Domain:
        """Same samples and clean labels, new training labels (noise, hidden labels...)."""
        return replace(self, labels=torch.as_tensor(labels), name=name or self.name)

    def with_classes(self, classes: Sequence[str]) -> Domain:
        """Same samples and labels under a named label set (e.g. an unlabelled target's)."""
        return replace(self, classes=tuple(classes))

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

    # -- reading samples ------------------------------------------------------------------------
    def dataset(
        self, transform: Callable[[Any], Any] | None = None, strict: bool = False
    ) -> DomainDataset:
        """A picklable map-style dataset for ``DataLoader`` workers: ``ds[i]`` or
        ``ds[(i, seed)]`` -> ``(transform(x), i)``; see :class:`~tlkit.datasets.loader.DomainDataset`.
        """
        return DomainDataset(self.backing, transform, strict=strict, name=self.name)

    def epoch_order(self, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
        """This epoch's sample order, a pure function of ``(seed, epoch)`` (shards: shard-local)."""
        return torch.from_numpy(self.backing.order(seed, epoch, shuffle))

    def stream(
        self,
        transform: Callable[[Any], Any] | None = None,
        *,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        skip: int = 0,
        shuffle: bool = True,
        strict: bool = False,
    ) -> StreamDataset:
        """An iterable dataset of ``(x, index)`` for one rank and epoch; see
        :class:`~tlkit.datasets.loader.StreamDataset` (order, worker split, skipping)."""
        return StreamDataset(
            self.backing,
            transform,
            seed=seed,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            skip=skip,
            shuffle=shuffle,
            strict=strict,
            name=self.name,
        )

    def materialize(
        self,
        image_size: int | None = None,
        *,
        resize: str = "squash",
        strict: bool = True,
        num_workers: int = 0,
        progress: bool = True,
    ) -> Domain:
        """Decode every image once into an in-memory ``uint8`` domain at ``image_size``.

        The old eager behaviour of ``from_folder``: fine for a few thousand small images, since
        memory is ``3 * image_size**2`` bytes per image. ``resize="squash"`` scales each image to
        the square (aspect ratio not kept, nothing cut off); ``"crop"`` scales the short side and
        cuts the centre square. ``strict=False`` drops unreadable files with a warning instead
        of raising. In-memory domains are returned as they are.
        """
        return materialize(
            self, image_size, resize=resize, strict=strict, num_workers=num_workers,
            progress=progress,
        )  # fmt: skip

    def check(self, *, progress: bool = True, strict: bool | None = None) -> dict[str, Any]:
        """Read every file's header (no decoding): unreadable files, decompression bombs, sizes.

        Returns a summary dict; raises :class:`DataError` when no file is readable, or when any
        is not and ``strict`` is true. In-memory domains have nothing to check.
        """
        return check_files(self.backing, self.name, progress=progress, strict=strict)
