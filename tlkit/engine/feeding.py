"""Data feeding: which samples each step trains on, how they reach the device, and the cache of
frozen-backbone features.

Two paths, chosen per domain:

* **In memory** (the bundled sets, ``from_arrays``, ``from_tensors``): the tensor is indexed
  directly -- on the accelerator when it fits (:data:`ON_DEVICE_DATA_LIMIT`) -- with no workers
  and no per-step copies. The digit-safe augmentations run batch-wise on the device.
* **Files** (``from_folder``, ``from_csv``, ``from_paths``, shards; also in-memory photos that
  get per-sample crops and flips): a ``torch.utils.data.DataLoader`` over ``domain.dataset()``
  decodes at native resolution in ``num_workers`` processes and applies the per-sample
  ``torchvision.transforms.v2`` pipeline of :mod:`tlkit.datasets.transforms`; pinned memory and
  non-blocking copies on CUDA, persistent workers across epochs. An unreadable file is skipped
  (one warning, counted), never the end of an epoch.

The order of epoch ``e`` is a pure function of ``(seed, e)``, and so is every sample's random
augmentation (keyed by ``(sample, seed(e))``, whatever the number of workers), so a resumed run
replays exactly the batches the uninterrupted one would have seen; it starts at the step it
stopped at without decoding the batches before it. Under torchrun each rank takes its own block
of the order (``DistributedSampler``'s split). The unlabelled target is drawn the same way,
``target_batch_ratio * batch_size`` samples a step, cycling when it is smaller than the source.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tlkit.datasets import transforms as tv
from tlkit.datasets.domain import DataError, Domain, DomainPair
from tlkit.datasets.loader import collate
from tlkit.datasets.unreadable import unreadable_error
from tlkit.engine import distributed
from tlkit.engine.class_balance import balanced_order
from tlkit.engine.config import FitConfig
from tlkit.errors import PluginError

#: Keep a whole dataset on the accelerator when it is smaller than this (bytes).
ON_DEVICE_DATA_LIMIT = 2 * 1024**3
#: The training size of file-backed images when neither the run nor the data sets one.
DEFAULT_IMAGE_SIZE = 224


def as_pair(
    data: DomainPair | Domain, *, source_free: bool = False, classes: Any = None
) -> DomainPair:
    """The task a run trains on. ``source_free``: only the target of ``data`` (a Domain is the
    target itself), see :meth:`DomainPair.without_source`."""
    if source_free:
        if isinstance(data, DomainPair):
            if data.source_free:
                return data
            if data.target is None:
                raise DataError(
                    f"source_free=True adapts to unlabelled target data, but task '{data.name}' "
                    "has none; pass the target Domain (e.g. from_folder(path, labels=False))."
                )
            return DomainPair.without_source(data.target, data.target_test, classes=classes)
        if isinstance(data, Domain):
            return DomainPair.without_source(data, classes=classes)
    if isinstance(data, DomainPair):
        return data
    if isinstance(data, Domain):
        return DomainPair(source=data, name=data.name)
    raise DataError(
        f"fit() needs a tlkit.datasets.Domain or DomainPair, got {type(data).__name__}. Build one "
        "with tlkit.datasets.load(name), from_arrays(images, labels) or from_folder(path)."
    )


def image_size(config: FitConfig, data: DomainPair, backbone: Any) -> int:
    """The side per-sample pipelines make images: ``image_size=``, the data's own, the
    backbone's input size, else :data:`DEFAULT_IMAGE_SIZE`."""
    for size in (config.image_size, data.source.image_size, getattr(backbone, "input_size", None)):
        if size:
            return int(size)
    return DEFAULT_IMAGE_SIZE


def resolve_augment(augment: Any, domain: Domain) -> Any:
    """What ``augment`` means for ``domain``: ``"auto"`` is crops and flips for photos (files, or
    large colour arrays) and nothing for tensors and small in-memory images (the bundled digits
    train on the images as they are unless ``augment=True`` asks for the digit-safe views)."""
    if augment == "auto":
        kind = tv.auto_augment(domain)
        return "photos" if kind == "photos" else False
    if augment is True:
        return tv.auto_augment(domain)
    if augment == "custom":  # a user's pipeline, given to the trainer; none here
        return False
    return augment


def worker_count(config: FitConfig, lazy: bool) -> int:
    if config.num_workers != "auto":
        return int(config.num_workers)
    return min(4, os.cpu_count() or 1) if lazy else 0


@dataclass
class Batch:
    """One step's samples. ``x``/``x_target`` are inputs on the device (float [0, 1] images, or
    the domain's tensors), or ``None`` when the step trains on cached features (then
    ``cached``/``target_cached`` hold them)."""

    y: torch.Tensor
    indices: torch.Tensor  # positions in data.source
    x: torch.Tensor | None = None
    cached: torch.Tensor | None = None
    target_indices: torch.Tensor | None = None  # positions in data.target
    x_target: torch.Tensor | None = None
    x_target_strong: torch.Tensor | None = None  # a strongly augmented view, when asked for
    target_cached: torch.Tensor | None = None
    source_free: bool = False

    @property
    def empty(self) -> bool:
        """Nothing to train on: every file of the source (or target) batch was unreadable."""
        no_source = len(self.indices) == 0 and not self.source_free
        no_target = self.target_indices is not None and len(self.target_indices) == 0
        return no_source or no_target


class _Keys(torch.utils.data.Sampler):
    """``(index, seed)`` keys of one epoch; reset between epochs so that persistent workers
    survive them (the sampler lives in the main process)."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def set(self, indices: torch.Tensor, seed: int) -> None:
        self.keys = [(int(i), seed) for i in indices.tolist()]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class DomainFeed:
    """How one domain's samples reach the device: the in-memory fast path, or a DataLoader.

    ``pipes`` are the domain's pipelines (:func:`tlkit.datasets.transforms.pipelines`): a
    per-sample ``train`` transform sends training through a DataLoader, ``None`` indexes the
    in-memory tensor. With ``strong`` the DataLoader also makes a strongly augmented view of each
    sample (FixMatch's); on the fast path, weak and strong views are made batch-wise on the device
    (:attr:`weak_view`, :attr:`strong_view`: the digit-safe ones).
    """

    def __init__(
        self,
        domain: Domain,
        pipes: tv.Pipelines,
        *,
        strong: bool,
        size: int,
        device: torch.device,
        config: FitConfig,
    ) -> None:
        from tlkit.datasets.augment import strong_augment, weak_augment

        self.domain, self.device, self.config = domain, device, config
        # how file-backed images are brought to size for evaluation (Run.predict does the same)
        self.resize = "squash" if pipes.kind in ("digits", "colour") else "crop"
        self.fast = pipes.train is None and domain.in_memory
        self.eval_fast = pipes.eval is None and domain.in_memory
        self.is_image = domain.modality == "image"
        self.augment = pipes.batch_weak  # batch-wise training augmentation (digits), or None
        self.weak_view = pipes.batch_weak or (weak_augment if self.is_image else None)
        self.strong_view = pipes.batch_strong or (strong_augment if self.is_image else None)
        self.memory = _to_device(domain.inputs, device) if domain.in_memory else None
        transform = pipes.train
        if strong and not self.fast:
            transform = tv.Views(pipes.train, pipes.strong or tv.strong_transform(size))
        self._train = domain.dataset(transform) if not self.fast else None
        self._eval = domain.dataset(pipes.eval) if not self.eval_fast else None
        self.workers = worker_count(config, lazy=not domain.in_memory)
        self._loaders: dict[str, tuple[torch.utils.data.DataLoader, _Keys]] = {}

    def view(self, kind: str, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """``Step.target_view``: the batch's weak or strong view, made for the data."""
        if not self.fast:  # photos: the workers made the views
            if kind == "weak":
                return batch.x_target
            if batch.x_target_strong is None:
                raise PluginError(
                    "a strategy asked for a strong view of file-backed images without declaring "
                    "needs_strong_view = True."
                )
            return batch.x_target_strong
        make = self.weak_view if kind == "weak" else self.strong_view
        if make is None:
            tv.require_images(self.domain, f"a {kind} view of the target batch")
        return make(batch.x_target, generator)

    # -- the in-memory fast path -----------------------------------------------------------
    def fetch(self, indices: torch.Tensor) -> torch.Tensor:
        batch = self.memory[indices.to(self.memory.device)].to(self.device, non_blocking=True)
        return batch.float().div_(255) if self.is_image and batch.dtype == torch.uint8 else batch

    # -- DataLoaders -----------------------------------------------------------------------
    def _loader(self, which: str, batch_size: int) -> tuple[torch.utils.data.DataLoader, _Keys]:
        if which not in self._loaders:
            keys = _Keys()
            workers = self.workers
            loader = torch.utils.data.DataLoader(
                self._train if which == "train" else self._eval,
                batch_size=batch_size,
                sampler=keys,
                collate_fn=collate,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                prefetch_factor=self.config.prefetch_factor if workers > 0 else None,
                generator=torch.Generator().manual_seed(self.config.seed),  # not the global one
            )
            self._loaders[which] = (loader, keys)
        return self._loaders[which]

    def load(
        self, indices: torch.Tensor, seed: int, batch_size: int, which: str = "train"
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """``(x, indices)`` batches of the samples at ``indices``, in that order, decoded and
        transformed in the workers; skipped files leave their batch smaller (or empty)."""
        loader, keys = self._loader(which, batch_size)
        keys.set(indices, seed)
        for x, idx in loader:
            yield _move(x, self.device), idx

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every sample once, in order, as evaluation inputs on the device."""
        n = len(self.domain)
        if self.eval_fast:
            for start in range(0, n, batch_size):
                idx = torch.arange(start, min(n, start + batch_size))
                yield self.fetch(idx), idx
            return
        yield from self.load(torch.arange(n), 0, batch_size, which="eval")

    @property
    def skipped(self) -> int:
        """Files of this domain that could not be read so far (training or evaluation)."""
        return len({i for ds in (self._train, self._eval) if ds is not None for i in ds.skipped})


def _rank_block(order: torch.Tensor, dist: distributed.DistInfo, n: int) -> torch.Tensor:
    """This rank's contiguous share of ``order`` (padded by wrapping to equal shares, as
    ``DistributedSampler`` does)."""
    if not dist.enabled:
        return order
    per_rank = math.ceil(n / dist.world_size)
    if per_rank * dist.world_size > n:
        order = order.repeat(math.ceil(per_rank * dist.world_size / n))[
            : per_rank * dist.world_size
        ]
    return order[dist.rank * per_rank : (dist.rank + 1) * per_rank]


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return tensor
    if tensor.numel() * tensor.element_size() < ON_DEVICE_DATA_LIMIT:
        return tensor.to(device)
    return tensor.pin_memory()


def _move(x: Any, device: torch.device) -> Any:
    if isinstance(x, tuple):
        return tuple(_move(v, device) for v in x)
    return None if x is None else x.to(device, non_blocking=True)


class Feeder:
    """Serves the batches of one run (see the module docstring)."""

    def __init__(
        self,
        data: DomainPair,
        config: FitConfig,
        device: torch.device,
        dist: distributed.DistInfo,
        *,
        size: int,
        strong_view: bool = False,
        train_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.config, self.device, self.dist = config, device, dist
        src = data.source
        self.source_free = data.source_free  # every step's source batch is empty
        self.labelled = src.labelled_mask.nonzero().flatten()  # positions in data.source
        if len(self.labelled) == 0 and not self.source_free:
            raise DataError("the source has no labelled samples to train on.")
        self.source_labels = src.labels.to(device)
        self.size = size
        self.source = self._feed(src, train_transform, strong=False)
        self.target = (
            self._feed(data.target, train_transform, strong=strong_view, target=True)
            if data.target is not None
            else None
        )
        self.eval_feeds = {
            name: self._feed(domain, None, strong=False)
            for name, domain in data.eval_sets().items()
        }
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # key -> (rows, row_of)
        self.target_batch_size = max(1, round(config.target_batch_ratio * config.batch_size))
        if self.source_free:  # an epoch is one pass over the target
            per_rank = math.ceil(len(data.target) / dist.world_size)
            self.steps_per_epoch = max(1, per_rank // self.target_batch_size)
        else:
            per_rank = math.ceil(len(self.labelled) / dist.world_size)
            self.steps_per_epoch = max(1, per_rank // config.batch_size)

    def _feed(
        self, domain: Domain, custom: Any, *, strong: bool, target: bool = False
    ) -> DomainFeed:
        augment = custom if custom is not None else resolve_augment(self.config.augment, domain)
        if target and augment == "colour":  # colours are for the source: the target's weak
            augment = "digits"  # view stays a translation, its geometry the source's
        pipes = tv.pipelines(domain, self.size, augment)
        return DomainFeed(
            domain, pipes, strong=strong, size=self.size, device=self.device, config=self.config
        )

    # -- orders ----------------------------------------------------------------------------
    def source_order(self, epoch: int) -> torch.Tensor:
        """Source sample indices for this rank and epoch. In memory: a seeded permutation (or
        ``DistributedSampler``'s split). Files: the domain's own order (shard-local for shards,
        so that each rank and worker reads its own shards), cut into one contiguous block per
        rank."""
        if self.config.sampler == "balanced":  # every class equally likely, in memory or files
            order = balanced_order(self.source.domain.labels, self.labelled, self.config.seed, epoch)
            return _rank_block(order, self.dist, len(order))
        if self.source.fast:
            return self.labelled[self.epoch_order(epoch)]
        order = self.source.domain.epoch_order(self.config.seed, epoch)
        order = order[self.source.domain.labelled_mask[order]]
        return _rank_block(order, self.dist, len(order))

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Positions (into the labelled source) for this rank and epoch (in-memory data)."""
        n = len(self.labelled)
        if self.dist.enabled:
            sampler = torch.utils.data.DistributedSampler(
                range(n),
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=self.config.seed,
            )
            sampler.set_epoch(epoch)
            return torch.tensor(list(sampler))
        g = torch.Generator().manual_seed(self.config.seed * 7919 + epoch)
        return torch.randperm(n, generator=g)

    def target_order(self, epoch: int) -> torch.Tensor:
        """Target indices for every step of this rank's epoch (cycling through the target)."""
        domain = self.target.domain
        n = len(domain)
        count = self.steps_per_epoch * self.target_batch_size
        reps = math.ceil(count * self.dist.world_size / n)
        if self.target.fast:
            g = torch.Generator().manual_seed(self.config.seed * 104729 + epoch + 1)
            order = torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])
        else:  # the domain's own (shard-local) orders, epoch after epoch
            seed = self.config.seed + 104729
            order = torch.cat([domain.epoch_order(seed, epoch * reps + r) for r in range(reps)])
        return order[self.dist.rank * count : (self.dist.rank + 1) * count]

    def epoch_seed(self, epoch: int, role: int) -> int:
        """The seed of every per-sample augmentation in ``epoch`` (role 0: source, 1: target)."""
        return (self.config.seed * 1_000_033 + epoch * 2 + role) % (2**62)

    # -- batches ---------------------------------------------------------------------------
    def batches(
        self, epoch: int, start: int, *, with_target: bool, cached: bool
    ) -> Iterator[Batch]:
        """The batches of ``epoch`` from step ``start`` on (a resumed epoch skips the rest
        without reading it)."""
        bs, bt = self.config.batch_size, self.target_batch_size
        steps = range(start, self.steps_per_epoch)
        if self.source_free:
            order = torch.empty(0, dtype=torch.long)
            source = iter(lambda: (None, order), None)  # an empty source batch every step
        else:
            order = self.source_order(epoch)[start * bs : self.steps_per_epoch * bs]
            source = self._stream(self.source, order, bs, epoch, 0, "source" if cached else None)
        target = None
        if (with_target or self.source_free) and self.target is not None:
            t_order = self.target_order(epoch)[start * bt :]
            target = self._stream(self.target, t_order, bt, epoch, 1, "target" if cached else None)
        read = False
        for _ in steps:
            x, idx = next(source)
            read = read or len(idx) > 0
            batch = Batch(
                y=self.source_labels[idx.to(self.device)], indices=idx, source_free=self.source_free
            )
            if cached:
                batch.cached = x
            else:
                batch.x = x
            if target is not None:
                x_t, t_idx = next(target)
                batch.target_indices = t_idx
                if cached:
                    batch.target_cached = x_t
                elif isinstance(x_t, tuple):
                    batch.x_target, batch.x_target_strong = x_t
                else:
                    batch.x_target = x_t
            if self.source_free and not batch.empty:  # zero rows shaped like the target's
                like = batch.target_cached if cached else batch.x_target
                batch.cached, batch.x = (like[:0], None) if cached else (None, like[:0])
            yield batch
        if len(steps) and not read and not self.source_free:  # every file failed to decode
            raise unreadable_error(self.source.domain, tried=len(order))

    def _stream(
        self,
        feed: DomainFeed,
        order: torch.Tensor,
        bs: int,
        epoch: int,
        role: int,
        cache: str | None,
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        chunks = order.split(bs)
        if cache is not None:
            rows, row_of = self.cache[cache]
            for idx in chunks:
                r = row_of[idx]
                keep = r >= 0  # files that could not be read have no features
                yield rows[r[keep].to(rows.device)].to(self.device).float(), idx[keep]
        elif feed.fast:
            for idx in chunks:
                yield feed.fetch(idx), idx
        else:
            yield from feed.load(order, self.epoch_seed(epoch, role), bs)

    # -- evaluation inputs and the feature cache -------------------------------------------
    def eval_batches(
        self, key: str, cached: bool
    ) -> tuple[Iterator[tuple[Any, torch.Tensor]], bool]:
        """``(batches, from_features)`` for a held-out set (``key`` = ``eval_<name>``) or the
        unlabelled target (``"target"``): its cached features when they exist, else its inputs."""
        if cached and key in self.cache:
            rows, row_of = self.cache[key]
            present = (row_of >= 0).nonzero().flatten()
            bs = self.config.eval_batch_size
            return (
                ((rows[row_of[c]].to(self.device).float(), c) for c in present.split(bs)),
                True,
            )
        feed = self.target if key == "target" else self.eval_feeds[key.removeprefix("eval_")]
        return feed.eval_batches(self.config.eval_batch_size), False

    @torch.no_grad()
    def cache_features(self, compute: Callable[..., Any], *, target: bool) -> None:
        """Run the frozen backbone once over the training and held-out sets (and the target when
        a strategy trains on it); later epochs only train the head. ``compute(batches)`` returns
        ``(features, indices)``."""
        sets = {**({} if self.source_free else {"source": self.source})}
        sets.update({f"eval_{k}": f for k, f in self.eval_feeds.items()})
        if target and self.target is not None:
            sets["target"] = self.target
        for key, feed in sets.items():
            if key in self.cache:
                continue
            rows, idx = compute(feed.eval_batches(self.config.eval_batch_size), key, feed.domain)
            row_of = torch.full((len(feed.domain),), -1, dtype=torch.long)
            row_of[idx] = torch.arange(len(idx))
            self.cache[key] = (rows, row_of)

    @property
    def skipped(self) -> int:
        feeds = [self.source, self.target, *self.eval_feeds.values()]
        return sum(f.skipped for f in feeds if f is not None)
