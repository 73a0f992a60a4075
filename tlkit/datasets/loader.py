"""What the engine's ``DataLoader`` reads: map-style and streaming datasets over a backing.

``d.dataset(transform)`` gives a :class:`DomainDataset`. Its keys are an index ``i`` or a pair
``(i, seed)``; an item is ``(transform(x), i)`` -- the *index*, not the label, because labels
change during training (noise, pseudo-labels) and live in the domain, while the dataset goes to
worker processes once. With a seed, the transform runs under ``torch.random.fork_rng`` seeded by
``(i, seed)`` (Python's and NumPy's global generators are seeded too, for user transforms that use
them; in the main process all three are restored afterwards), so a sample's augmentation is a pure function of ``(i, seed)`` whatever the number of
workers, their scheduling, or the thread: the engine passes ``seed = f(run seed, epoch)``. A
module-level lock guards the global generators across threads; worker processes each have
their own.

A file that fails to decode yields ``None`` (``collate`` drops it) and ONE warning naming the
file; the skip is recorded in a shared-memory mask, so ``ds.num_skipped`` / ``ds.skipped_paths()``
in the main process count skips made in any worker. ``strict=True`` raises :class:`DataError`
naming the file instead.

``d.stream(...)`` gives a :class:`StreamDataset` (an ``IterableDataset``) for one rank and epoch:
the order is ``d.epoch_order(seed, epoch)`` (shard-local for shards), split across ranks into
equal contiguous blocks (padded by wrapping, like ``DistributedSampler``), with the first
``skip`` samples of the rank's block dropped *before* anything is read (exact resume), and split
across workers by whole batches round-robin, which is how ``DataLoader`` interleaves workers: the
batches come out in the rank's order whatever ``num_workers`` is.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from tlkit.rng import GLOBAL_RNG_LOCK

from .backing import Backing, TensorBacking, _mix
from .decode import DecodeError
from .errors import DataError, DataWarning, check_image_size
from .reduced import load_for
from .user_frame import user_stacklevel

_RNG_LOCK = GLOBAL_RNG_LOCK  # the engine's steps hold the same lock (tlkit.rng)


def seeded_call(fn: Callable[[Any], Any], x: Any, seed: int) -> Any:
    """``fn(x)`` with torch's CPU generator (and Python's and NumPy's) seeded by ``seed``.

    In the main process the global states are restored afterwards, under a process-wide lock.
    A DataLoader worker owns its generators (the loader reseeds them and nothing else in the
    worker draws from them between samples), so there the save/restore -- ~80 us a sample, 40%
    of a small photo's decode + augment -- is skipped. Only the CPU generator is seeded
    (``torch.manual_seed`` would also reseed every CUDA device, ~100 us and not restored).
    """
    s = int(seed) & ((1 << 63) - 1)
    if torch.utils.data.get_worker_info() is not None:
        torch.default_generator.manual_seed(s)
        random.seed(s)
        np.random.seed(s % (1 << 32))
        return fn(x)
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        py_state = random.getstate()
        np_state = np.random.get_state()
        try:
            torch.default_generator.manual_seed(s)
            random.seed(s)
            np.random.seed(s % (1 << 32))
            return fn(x)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class _Reader:
    """Shared by both dataset kinds: read one sample, transform it, record skips."""

    def __init__(
        self, backing: Backing, transform: Callable[[Any], Any] | None, strict: bool, name: str
    ) -> None:
        if transform is not None and not callable(transform):
            raise DataError(
                f"transform must be callable (a torchvision.transforms.v2 pipeline or a "
                f"function of a uint8 (C, H, W) tensor), got {type(transform).__name__}."
            )
        self.backing = backing
        self.transform = transform
        self.strict = bool(strict)
        self.name = name
        # files can fail; a shared mask makes skips in worker processes visible here
        self._failed = None
        if not isinstance(backing, TensorBacking):
            self._failed = torch.zeros(len(backing), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.backing)

    def read(self, index: int, seed: int | None) -> tuple[Any, int] | None:
        try:  # a size-aware transform gets the file undecoded and decodes what it needs
            x = load_for(self.backing, index, self.transform)
            if self.transform is not None:
                x = (
                    self.transform(x)
                    if seed is None
                    else seeded_call(self.transform, x, _mix(seed, index))
                )
        except DecodeError as e:
            if self.strict:
                raise DataError(
                    f"Domain '{self.name}': {e} (strict=True). Remove or replace the file, or "
                    "pass strict=False to skip unreadable files with a warning."
                ) from None
            self._record_skip(index, e)
            return None
        return x, index

    def _record_skip(self, index: int, error: DecodeError) -> None:
        if self._failed is None or bool(self._failed[index]):
            return  # one warning per file, however many epochs
        self._failed[index] = True
        warnings.warn(
            f"Domain '{self.name}': skipping unreadable file '{error.source}' ({error.reason}); "
            "the batch is one sample shorter. strict=True raises instead.",
            DataWarning,
            stacklevel=user_stacklevel(),
        )

    @property
    def num_skipped(self) -> int:
        """Files skipped so far (in any worker process) because they could not be decoded."""
        return 0 if self._failed is None else int(self._failed.sum())

    @property
    def skipped(self) -> list[int]:
        """Indices (into this domain) of the files skipped so far."""
        return [] if self._failed is None else self._failed.nonzero().flatten().tolist()

    def skipped_paths(self) -> list[str]:
        return [self.backing.describe(i) for i in self.skipped]


class DomainDataset(_Reader, torch.utils.data.Dataset):
    """Map-style: ``ds[i]`` or ``ds[(i, seed)]`` -> ``(x, i)`` or ``None`` for a skipped file.

    ``x`` is ``transform(sample)``, the sample being a ``uint8 (C, H, W)`` image at native
    resolution (or the domain's tensor row); without a transform, the sample itself. Picklable
    for ``DataLoader`` workers; use :func:`collate` as the ``collate_fn``.
    """

    def __init__(
        self,
        backing: Backing,
        transform: Callable[[Any], Any] | None = None,
        *,
        strict: bool = False,
        name: str = "domain",
    ) -> None:
        super().__init__(backing, transform, strict, name)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int] | None:
        if isinstance(key, (tuple, list)):
            index, seed = int(key[0]), int(key[1])
        else:
            index, seed = int(key), None
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self.read(index % len(self), seed)


class KeySampler(torch.utils.data.Sampler):
    """Yields ``(index, seed)`` keys for :class:`DomainDataset`: the given order, one seed.

    ``DataLoader(ds, sampler=KeySampler(d.epoch_order(seed, epoch), seed=mix), ...)`` makes every
    sample's augmentation a pure function of ``(index, seed)``.
    """

    def __init__(self, order: Sequence[int] | torch.Tensor, seed: int) -> None:
        self.order = torch.as_tensor(order, dtype=torch.long)
        self.seed = int(seed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed = self.seed
        return ((i, seed) for i in self.order.tolist())

    def __len__(self) -> int:
        return len(self.order)


class StreamDataset(_Reader, torch.utils.data.IterableDataset):
    """One rank's samples for one epoch, as ``(x, index)`` (``None`` for a skipped file).

    Use with ``DataLoader(stream, batch_size=batch_size, num_workers=..., collate_fn=collate)``
    and the same ``batch_size`` as given here: workers take whole batches round-robin, so the
    batches arrive in the rank's order whatever ``num_workers`` is. Augmentations are seeded by
    ``(index, mix(seed, epoch))``.
    """

    def __init__(
        self,
        backing: Backing,
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
        name: str = "domain",
    ) -> None:
        for what, v, lo in (("world_size", world_size, 1), ("batch_size", batch_size, 1),
                            ("skip", skip, 0), ("rank", rank, 0)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise DataError(f"stream(): {what} must be an int >= {lo}, got {v!r}.")
        if rank >= world_size:
            raise DataError(f"stream(): rank {rank} is not below world_size {world_size}.")
        super().__init__(backing, transform, strict, name)
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.batch_size, self.skip, self.shuffle = batch_size, skip, shuffle

    def rank_indices(self) -> np.ndarray:
        """This rank's sample indices for the epoch, after ``skip`` (nothing is read)."""
        order = self.backing.order(self.seed, self.epoch, self.shuffle)
        per_rank = math.ceil(len(order) / self.world_size)
        total = per_rank * self.world_size
        if total > len(order):  # pad by wrapping, as DistributedSampler does
            order = np.resize(order, total)
        mine = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        return mine[self.skip :]

    def __len__(self) -> int:
        return len(self.rank_indices())

    def __iter__(self) -> Iterator[tuple[Any, int] | None]:
        mine = self.rank_indices()
        info = torch.utils.data.get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        seed = _mix(self.seed, self.epoch)
        b = self.batch_size
        for start in range(worker * b, len(mine), workers * b):
            for i in mine[start : start + b].tolist():
                yield self.read(i, seed)


def _stack(xs: Sequence[Any]) -> Any:
    first = xs[0]
    if isinstance(first, torch.Tensor):
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) > 1:
            raise DataError(
                f"samples in one batch have different shapes ({sorted(shapes)[:3]}...): images "
                "are decoded at their native size, so give d.dataset() a transform that makes "
                "one size, e.g. tlkit.datasets.transforms.eval_transform(224)."
            )
        # default_collate stacks straight into shared memory inside a worker process, which
        # saves copying every batch once more on its way to the main process
        return torch.utils.data.default_collate(list(xs))
    if isinstance(first, (tuple, list)):  # several views of each sample (weak, strong)
        return tuple(_stack([x[k] for x in xs]) for k in range(len(first)))
    if isinstance(first, (int, float, np.number)):
        return torch.as_tensor(xs)
    raise DataError(
        f"a transform returned {type(first).__name__}; collate stacks tensors (or tuples of "
        "tensors). End the pipeline with v2.ToDtype(torch.float32, scale=True)."
    )


def collate(batch: Sequence[tuple[Any, int] | None]) -> tuple[Any, torch.Tensor]:
    """``[(x, i), None, ...]`` -> ``(stacked x, indices LongTensor)``, dropping ``None`` (skipped
    files). ``x`` may be a tuple of views; an all-skipped batch gives ``(None, empty indices)``."""
    items = [b for b in batch if b is not None]
    if not items:
        return None, torch.empty(0, dtype=torch.long)
    xs, idx = zip(*items)
    return _stack(xs), torch.as_tensor(idx, dtype=torch.long)


def _squash(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms import v2

    from .reduced import DecodeAtSize  # JPEGs decoded at the DCT scale the size allows

    return DecodeAtSize(v2.Resize((size, size), antialias=True))


def _crop(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms import v2

    from .reduced import DecodeAtSize

    return DecodeAtSize(v2.Resize(size, antialias=True), [v2.CenterCrop(size)])


def materialize(
    domain: Any,
    image_size: int | None,
    *,
    resize: str = "squash",
    strict: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    batch_size: int = 64,
) -> Any:
    """Decode a file-backed domain into memory (see :meth:`Domain.materialize`)."""
    from dataclasses import replace

    if domain.in_memory:
        return domain
    size = check_image_size(image_size if image_size is not None else domain.image_size)
    if size is None:
        raise DataError(
            f"Domain '{domain.name}': materialize() needs image_size= (the square side every "
            "image is resized to, e.g. 224), since files have different sizes."
        )
    if resize not in ("squash", "crop"):
        raise DataError(f"resize must be 'squash' or 'crop', got {resize!r}.")
    ds = domain.dataset(_squash(size) if resize == "squash" else _crop(size), strict=strict)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate
    )
    out = torch.empty((len(domain), 3, size, size), dtype=torch.uint8)
    keep = torch.zeros(len(domain), dtype=torch.bool)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=f"decoding {domain.name}", unit="batch")
    for x, idx in loader:
        if len(idx):
            out[idx] = x
            keep[idx] = True
    from .backing import TensorBacking

    backing = TensorBacking(out, "image")
    result = replace(domain, backing=backing, image_size=None)
    if not keep.all():
        if not keep.any():
            raise DataError(f"Domain '{domain.name}': no file could be decoded.")
        dropped = ds.skipped_paths()
        warnings.warn(
            f"Domain '{domain.name}': {len(dropped)} unreadable file(s) left out of the in-memory "
            f"domain (e.g. '{dropped[0] if dropped else '?'}').",
            DataWarning,
            stacklevel=3,
        )
        result = result.subset(keep.nonzero().flatten())
    return result
