"""Data feeding: which samples each step trains on, how they reach the device, and the cache of
frozen-backbone features.

The order of epoch ``e`` is a pure function of ``(seed, e)`` (a seeded permutation, or
``DistributedSampler``'s order under torchrun), so a resumed run replays exactly the batches the
uninterrupted run would have seen, starting at the step it stopped at. The unlabelled target is
drawn the same way, ``target_batch_ratio * batch_size`` samples a step, cycling when it is
smaller than the source.

In-memory data (the bundled sets, ``from_arrays``) is indexed directly, on the accelerator when it
fits (:data:`ON_DEVICE_DATA_LIMIT`): no workers, no copies per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tlkit.datasets.domain import DataError, Domain, DomainPair
from tlkit.engine import distributed
from tlkit.engine.config import FitConfig
from tlkit.engine.evaluate import predict_features

#: Keep a whole dataset on the accelerator when it is smaller than this (bytes).
ON_DEVICE_DATA_LIMIT = 2 * 1024**3


def as_pair(data: DomainPair | Domain) -> DomainPair:
    if isinstance(data, DomainPair):
        return data
    if isinstance(data, Domain):
        return DomainPair(source=data, name=data.name)
    raise DataError(
        f"fit() needs a tlkit.datasets.Domain or DomainPair, got {type(data).__name__}. Build one "
        "with tlkit.datasets.load(name), from_arrays(images, labels) or from_folder(path)."
    )


@dataclass
class Batch:
    """One step's samples. ``x``/``x_target`` are float [0, 1] inputs on the device, or ``None``
    when the step trains on cached features (then ``cached``/``target_cached`` hold them)."""

    y: torch.Tensor
    indices: torch.Tensor  # positions in data.source
    x: torch.Tensor | None = None
    cached: torch.Tensor | None = None
    target_indices: torch.Tensor | None = None  # positions in data.target
    x_target: torch.Tensor | None = None
    target_cached: torch.Tensor | None = None


class Feeder:
    """Serves the batches of one run (see the module docstring)."""

    def __init__(
        self, data: DomainPair, config: FitConfig, device: torch.device, dist: distributed.DistInfo
    ) -> None:
        self.config, self.device, self.dist = config, device, dist
        src = data.source
        self.labelled = src.labelled_mask.nonzero().flatten()  # positions in data.source
        if len(self.labelled) == 0:
            raise DataError("the source has no labelled samples to train on.")
        self.source_images = self._to_device(src.images[self.labelled])
        self.source_labels = src.labels[self.labelled].to(device)
        self.target = data.target
        self.target_images = (
            self._to_device(data.target.images) if data.target is not None else None
        )
        self.eval_sets = data.eval_sets()
        self.cache: dict[str, torch.Tensor] = {}
        per_rank = math.ceil(len(self.labelled) / dist.world_size)
        self.steps_per_epoch = max(1, per_rank // config.batch_size)
        self.target_batch_size = max(1, round(config.target_batch_ratio * config.batch_size))

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return images
        if images.numel() < ON_DEVICE_DATA_LIMIT:
            return images.to(self.device)
        return images.pin_memory()

    # -- orders ----------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Positions (into the labelled source) for this rank and epoch."""
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
        """Target positions for every step of the epoch (cycling through the target)."""
        n = len(self.target_images)
        count = self.steps_per_epoch * self.target_batch_size
        g = torch.Generator().manual_seed(self.config.seed * 104729 + epoch + 1)
        reps = math.ceil(count / n)
        return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[:count]

    # -- batches ---------------------------------------------------------------------------
    def batches(
        self, epoch: int, start: int, *, with_target: bool, cached: bool
    ) -> Iterator[Batch]:
        """The batches of ``epoch`` from step ``start`` on (a resumed epoch skips the rest)."""
        bs, bt = self.config.batch_size, self.target_batch_size
        order = self.epoch_order(epoch)
        t_order = (
            self.target_order(epoch) if with_target and self.target_images is not None else None
        )
        for i in range(start, self.steps_per_epoch):
            pos = order[i * bs : (i + 1) * bs]
            batch = Batch(
                y=self.source_labels[pos.to(self.source_labels.device)], indices=self.labelled[pos]
            )
            if cached:
                batch.cached = self.cache["source"][pos.to(self.device)]
            else:
                batch.x = self._fetch(self.source_images, pos)
            if t_order is not None:
                t_pos = t_order[i * bt : (i + 1) * bt]
                batch.target_indices = t_pos
                if cached:
                    batch.target_cached = self.cache["target"][t_pos.to(self.device)]
                else:
                    batch.x_target = self._fetch(self.target_images, t_pos)
            yield batch

    def _fetch(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        batch = images[idx.to(images.device)]
        return batch.to(self.device, non_blocking=True).float().div_(255)

    # -- the feature cache -----------------------------------------------------------------
    @torch.no_grad()
    def cache_features(self, model: torch.nn.Module, precision: str, *, target: bool) -> None:
        """Run the frozen backbone once over the training and held-out sets (and the target when
        a strategy trains on it); later epochs only train the head."""

        def run(images: torch.Tensor) -> torch.Tensor:
            return predict_features(
                model,
                images,
                batch_size=self.config.eval_batch_size,
                precision=precision,
                to_cpu=False,
            )

        if "source" not in self.cache:
            self.cache["source"] = run(self.source_images)
            for name, domain in self.eval_sets.items():
                self.cache[f"eval_{name}"] = run(domain.images)
        if target and "target" not in self.cache and self.target_images is not None:
            self.cache["target"] = run(self.target_images)

    def inputs_for(self, key: str, domain: Domain, cached: bool) -> tuple[torch.Tensor, bool]:
        """What evaluating ``domain`` runs on: its cached features (``True``) or its images.
        ``key`` is ``eval_<name>`` for a held-out set, ``target`` for the unlabelled target."""
        if cached and key in self.cache:
            return self.cache[key], True
        return domain.images, False
