"""How one domain's samples reach the device: indexed in memory (on the accelerator when they
fit), or decoded by a ``DataLoader`` over the domain's files (see :mod:`tlkit.engine.feeding`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch

from tlkit.datasets import transforms as tv
from tlkit.datasets.domain import Domain
from tlkit.datasets.loader import collate
from tlkit.engine.config import FitConfig
from tlkit.errors import PluginError

#: Keep a whole dataset on the accelerator when it is smaller than this (bytes).
ON_DEVICE_DATA_LIMIT = 2 * 1024**3


def worker_count(config: FitConfig, lazy: bool) -> int:
    if config.num_workers != "auto":
        return int(config.num_workers)
    return min(4, os.cpu_count() or 1) if lazy else 0


class _Keys(torch.utils.data.Sampler):
    """One epoch's batches of ``(index, seed)`` keys (a batch sampler); reset between epochs so
    that persistent workers survive them (the sampler lives in the main process)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def set(self, indices: torch.Tensor, seed: int, sizes: list[int]) -> None:
        keys = [(int(i), seed) for i in indices.tolist()]
        self.batches, start = [], 0
        for size in sizes:
            if keys[start : start + size]:
                self.batches.append(keys[start : start + size])
            start += size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


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
        self._closed = False  # after training: workers live for one pass only

    def view(self, kind: str, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """``Step.target_view``: the weak or strong view of ``batch`` (a feeding ``Batch``),
        made for the data."""
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
    def _loader(self, which: str) -> tuple[torch.utils.data.DataLoader, _Keys]:
        if which not in self._loaders:
            keys = _Keys()
            workers = self.workers
            loader = torch.utils.data.DataLoader(
                self._train if which == "train" else self._eval,
                batch_sampler=keys,
                collate_fn=collate,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0 and not self._closed,
                prefetch_factor=self.config.prefetch_factor if workers > 0 else None,
                generator=torch.Generator().manual_seed(self.config.seed),  # not the global one
            )
            self._loaders[which] = (loader, keys)
        return self._loaders[which]

    def close(self) -> None:
        """End the worker processes now. Persistent workers otherwise live until a garbage
        collection finds the run's reference cycle, at any moment and in any thread, where their
        shutdown races other DataLoaders (stray 'Bad file descriptor' tracebacks). Loaders made
        afterwards (evaluation of a finished run) start and end their workers with each pass."""
        self._closed = True
        loaders, self._loaders = self._loaders, {}
        for loader, _keys in loaders.values():
            iterator, loader._iterator = loader._iterator, None  # the persistent workers' one
            shutdown = getattr(iterator, "_shutdown_workers", None)  # torch's own shutdown
            if shutdown is not None:
                shutdown()

    def load(
        self, indices: torch.Tensor, seed: int, sizes: list[int], which: str = "train"
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """``(x, indices)`` batches of ``sizes`` samples of ``indices``, in that order, decoded
        and transformed in the workers; skipped files leave their batch smaller (or empty)."""
        loader, keys = self._loader(which)
        keys.set(indices, seed, sizes)
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
        sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
        yield from self.load(torch.arange(n), 0, sizes, which="eval")

    @property
    def skipped(self) -> int:
        """Files of this domain that could not be read so far (training or evaluation)."""
        return len({i for ds in (self._train, self._eval) if ds is not None for i in ds.skipped})


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
