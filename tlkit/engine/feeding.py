"""Data feeding: which samples each step trains on and how they reach the device (or, while the
backbone is frozen, their rows of a :class:`~tlkit.engine.feature_cache.FeatureCache`).

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

Every labelled sample trains every epoch: the last batch is smaller when the batch size does not
divide the data, and ``batch_size="auto"`` keeps small sets at several steps an epoch
(:mod:`tlkit.engine.batch_plan`).

The order of epoch ``e`` is a pure function of ``(seed, e)``, and so is every sample's random
augmentation (keyed by ``(sample, seed(e))``, whatever the number of workers), so a resumed run
replays exactly the batches the uninterrupted one would have seen; it starts at the step it
stopped at without decoding the batches before it. Under torchrun each rank takes its own block
of the order (``DistributedSampler``'s split). The unlabelled target is drawn the same way,
``target_batch_ratio * batch_size`` samples a step, cycling when it is smaller than the source.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tlkit import rng
from tlkit.datasets import sizing
from tlkit.datasets import transforms as tv
from tlkit.datasets.domain import DataError, Domain
from tlkit.datasets.pair import DomainPair
from tlkit.datasets.sizing import DEFAULT_IMAGE_SIZE
from tlkit.datasets.unreadable import unreadable_error
from tlkit.engine import batch_plan, distributed
from tlkit.engine.class_balance import balanced_order
from tlkit.engine.config import FitConfig
from tlkit.engine.domain_feed import DomainFeed
from tlkit.engine.feature_cache import FeatureCache


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
    """The side a run trains at: ``image_size=``, the data's own, the backbone's input size,
    else :data:`DEFAULT_IMAGE_SIZE` (:mod:`tlkit.datasets.sizing`)."""
    if data.modality != "image":  # per-sample pipelines of non-image data ignore it
        return config.image_size or getattr(backbone, "input_size", None) or DEFAULT_IMAGE_SIZE
    return sizing.training_image_size(config.image_size, data, backbone)


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
        if config.progress and dist.rank == 0 and data.modality == "image":
            why = sizing.size_reason(config.image_size, data)
            print(sizing.size_line(size, why), file=sys.stderr)
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
        # every sample trains each epoch: the last batch is smaller (see tlkit.engine.batch_plan)
        if self.source_free:  # an epoch is one pass over the target (its last batch refilled
            per_rank = math.ceil(len(data.target) / dist.world_size)  # from the next pass)
            self.batch_size = batch_plan.resolve_batch_size(config.batch_size, per_rank)
            self.target_batch_size = self._target_batch_size()
            self.sizes: list[int] = []
            self.steps_per_epoch = max(1, math.ceil(per_rank / self.target_batch_size))
        else:
            per_rank = math.ceil(len(self.labelled) / dist.world_size)
            self.batch_size = batch_plan.resolve_batch_size(config.batch_size, per_rank)
            self.target_batch_size = self._target_batch_size()
            self.sizes = batch_plan.batch_sizes(per_rank, self.batch_size)
            self.steps_per_epoch = max(1, len(self.sizes))

    def close(self) -> None:
        """End every feed's DataLoader workers (see :meth:`DomainFeed.close`)."""
        for feed in (self.source, self.target, *self.eval_feeds.values()):
            if feed is not None:
                feed.close()

    def _target_batch_size(self) -> int:
        return max(1, round(self.config.target_batch_ratio * self.batch_size))

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
            order = balanced_order(
                self.source.domain.labels, self.labelled, self.config.seed, epoch
            )
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
        g = torch.Generator().manual_seed(rng.source_order_seed(self.config.seed, epoch))
        return torch.randperm(n, generator=g)

    def target_order(self, epoch: int) -> torch.Tensor:
        """Target indices for every step of this rank's epoch (cycling through the target)."""
        domain = self.target.domain
        n = len(domain)
        count = self.steps_per_epoch * self.target_batch_size
        reps = math.ceil(count * self.dist.world_size / n)
        if self.target.fast:
            g = torch.Generator().manual_seed(rng.target_order_seed(self.config.seed, epoch))
            order = torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])
        else:  # the domain's own (shard-local) orders, epoch after epoch
            seed = rng.target_shard_seed(self.config.seed)
            order = torch.cat([domain.epoch_order(seed, epoch * reps + r) for r in range(reps)])
        return order[self.dist.rank * count : (self.dist.rank + 1) * count]

    def epoch_seed(self, epoch: int, role: int) -> int:
        """The seed of every per-sample augmentation in ``epoch`` (role 0: source, 1: target)."""
        return rng.augment_seed(self.config.seed, epoch, role)

    # -- batches ---------------------------------------------------------------------------
    def batches(
        self, epoch: int, start: int, *, with_target: bool, features: FeatureCache | None = None
    ) -> Iterator[Batch]:
        """The batches of ``epoch`` from step ``start`` on (a resumed epoch skips the rest
        without reading it); with ``features``, the cached features instead of the inputs."""
        cached = features is not None
        bt = self.target_batch_size
        steps = range(start, self.steps_per_epoch)
        if self.source_free:
            order = torch.empty(0, dtype=torch.long)
            source = iter(lambda: (None, order), None)  # an empty source batch every step
        else:
            sizes = self.sizes[start:]
            skip = sum(self.sizes[:start])
            order = self.source_order(epoch)[skip : skip + sum(sizes)]
            source = self._stream(self.source, order, sizes, epoch, 0, features, "source")
        target = None
        if (with_target or self.source_free) and self.target is not None:
            t_order = self.target_order(epoch)[start * bt :]
            t_sizes = [bt] * len(steps)
            target = self._stream(self.target, t_order, t_sizes, epoch, 1, features, "target")
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
        sizes: list[int],
        epoch: int,
        role: int,
        features: FeatureCache | None,
        key: str,
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        chunks = batch_plan.split(order, sizes)
        if features is not None:
            rows, row_of = features.rows(key)
            for idx in chunks:
                r = row_of[idx]
                keep = r >= 0  # files that could not be read have no features
                yield rows[r[keep].to(rows.device)].to(self.device).float(), idx[keep]
        elif feed.fast:
            for idx in chunks:
                yield feed.fetch(idx), idx
        else:
            yield from feed.load(order, self.epoch_seed(epoch, role), sizes)

    # -- evaluation inputs and the sets the feature cache holds -----------------------------
    def eval_batches(
        self, key: str, features: FeatureCache | None = None
    ) -> tuple[Iterator[tuple[Any, torch.Tensor]], bool]:
        """``(batches, from_features)`` for a held-out set (``key`` = ``eval_<name>``) or the
        unlabelled target (``"target"``): its rows of ``features`` when that holds the set, else
        its inputs."""
        if features is not None and key in features:
            rows, row_of = features.rows(key)
            present = (row_of >= 0).nonzero().flatten()
            bs = self.config.eval_batch_size
            return (
                ((rows[row_of[c]].to(self.device).float(), c) for c in present.split(bs)),
                True,
            )
        feed = self.target if key == "target" else self.eval_feeds[key.removeprefix("eval_")]
        return feed.eval_batches(self.config.eval_batch_size), False

    def feature_sets(self, *, target: bool) -> dict[str, DomainFeed]:
        """The sets a frozen backbone's features are cached for, by key: the training set (none
        when source-free), every held-out set and, with ``target``, the unlabelled target."""
        sets = {} if self.source_free else {"source": self.source}
        sets.update({f"eval_{k}": f for k, f in self.eval_feeds.items()})
        if target and self.target is not None:
            sets["target"] = self.target
        return sets

    @property
    def skipped(self) -> int:
        feeds = [self.source, self.target, *self.eval_feeds.values()]
        return sum(f.skipped for f in feeds if f is not None)
