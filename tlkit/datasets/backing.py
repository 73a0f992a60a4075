"""Backings: where a :class:`~tlkit.datasets.Domain`'s samples live, and how one is read.

A backing knows its length, how to take a subset *without reading any sample* (``take``), how
to read sample ``i`` (``load``), and the epoch order it prefers (``order``). The domain keeps the
labels; the backing keeps the inputs:

* :class:`TensorBacking` -- one tensor in memory (images ``uint8 (N, C, H, W)`` or any other
  per-sample tensor). ``load`` is an index.
* :class:`FileBacking` -- image files, decoded by ``load`` (:mod:`tlkit.datasets.decode`). The
  paths are kept in a :class:`PathTable`: one byte buffer and two offset arrays instead of a list
  of Python strings. That keeps a million paths in ~60 MB, pickles to ``DataLoader`` workers as
  three buffers, and avoids the copy-on-read growth that lists of Python objects cause in
  forked workers (every read touches a refcount, which copies the page).
* :class:`ShardBacking` -- WebDataset tar shards with an index of where each sample's image
  bytes start (:mod:`tlkit.datasets.shards`): random access by seek, and shard-local orders for
  streaming.
* :class:`DatasetBacking` -- any map-style dataset returning ``(image, target)`` (a torchvision
  dataset whose images are not already one array), read item by item.

Backings are small, immutable and picklable: ``DataLoader`` workers receive them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from .decode import DEFAULT_MAX_PIXELS, DecodeError, decode_bytes, decode_file, pil_to_rgb, probe
from .errors import DataError


def _mix(*values: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 steps), stable across platforms."""
    z = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    for v in values:
        z = (z + (int(v) & mask) + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
    return z >> 1


class Backing:
    """Where samples live. Subclasses set ``modality``, ``in_memory`` and ``kind``."""

    modality = "image"
    in_memory = False
    kind = "samples"

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, idx: np.ndarray) -> Backing:
        """The samples at ``idx`` (int64 array), without reading any of them."""
        raise NotImplementedError  # pragma: no cover - abstract

    def load(self, i: int) -> torch.Tensor:
        """Sample ``i``: ``uint8 (C, H, W)`` for images; raises :class:`DecodeError`."""
        raise NotImplementedError  # pragma: no cover - abstract

    def describe(self, i: int) -> str:
        """How sample ``i`` is named in messages (a path for files)."""
        return f"sample {i}"

    @property
    def paths(self) -> list[str] | None:
        return None

    @property
    def tensor(self) -> torch.Tensor:
        raise DataError(f"{self.kind} are not held in memory.")

    def order(self, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
        """Indices for one epoch, a pure function of ``(seed, epoch)``."""
        n = len(self)
        if not shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng(_mix(seed, epoch)).permutation(n).astype(np.int64)


class TensorBacking(Backing):
    """One in-memory tensor ``(N, ...)``."""

    in_memory = True

    def __init__(self, tensor: torch.Tensor, modality: str = "image") -> None:
        self._tensor = tensor
        self.modality = modality
        self.kind = "images in memory" if modality == "image" else "tensors in memory"

    def __len__(self) -> int:
        return len(self._tensor)

    @property
    def tensor(self) -> torch.Tensor:
        return self._tensor

    def take(self, idx: np.ndarray) -> TensorBacking:
        return TensorBacking(self._tensor[torch.from_numpy(np.asarray(idx, dtype=np.int64))],
                             self.modality)  # fmt: skip

    def load(self, i: int) -> torch.Tensor:
        return self._tensor[i]


class PathTable:
    """Many file paths in three numpy arrays: ``root`` + ``buf[starts[i]:ends[i]]``.

    Subsets share ``buf``; only the offset arrays are indexed.
    """

    def __init__(self, root: str, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.root, self.buf, self.starts, self.ends = root, buf, starts, ends

    @classmethod
    def from_paths(cls, paths: list[str], root: str = "") -> PathTable:
        """Paths relative to ``root`` (or absolute with ``root=""``)."""
        encoded = [os.fsencode(p) for p in paths]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        ends = np.cumsum(lengths)
        buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return cls(root, buf, ends - lengths, ends)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> str:
        rel = os.fsdecode(self.buf[self.starts[i] : self.ends[i]].tobytes())
        return os.path.join(self.root, rel) if self.root else rel

    def take(self, idx: np.ndarray) -> PathTable:
        return PathTable(self.root, self.buf, self.starts[idx], self.ends[idx])

    def tolist(self) -> list[str]:
        return [self[i] for i in range(len(self))]


class FileBacking(Backing):
    """Image files decoded on demand at native resolution (3-channel RGB, see ``decode``)."""

    kind = "image files"

    def __init__(self, table: PathTable, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.table = table
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.table)

    def take(self, idx: np.ndarray) -> FileBacking:
        return FileBacking(self.table.take(np.asarray(idx, dtype=np.int64)), self.max_pixels)

    def load(self, i: int) -> torch.Tensor:
        return decode_file(self.table[i], self.max_pixels)

    def describe(self, i: int) -> str:
        return self.table[i]

    @property
    def paths(self) -> list[str]:
        return self.table.tolist()


class ShardBacking(Backing):
    """Images inside WebDataset tar shards, read by seeking to each member's bytes."""

    kind = "WebDataset shards"

    def __init__(
        self,
        urls: list[str],
        shard: np.ndarray,
        offset: np.ndarray,
        size: np.ndarray,
        keys: PathTable,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.urls, self.shard, self.offset, self.size = list(urls), shard, offset, size
        self.keys = keys
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.shard)

    def take(self, idx: np.ndarray) -> ShardBacking:
        idx = np.asarray(idx, dtype=np.int64)
        return ShardBacking(
            self.urls, self.shard[idx], self.offset[idx], self.size[idx], self.keys.take(idx),
            self.max_pixels,
        )  # fmt: skip

    def read_bytes(self, i: int) -> bytes:
        url = self.urls[int(self.shard[i])]
        try:
            with open(url, "rb") as f:
                f.seek(int(self.offset[i]))
                data = f.read(int(self.size[i]))
        except OSError as e:
            raise DecodeError(self.describe(i), f"cannot be read ({e.strerror or e})") from None
        if len(data) != int(self.size[i]):
            raise DecodeError(self.describe(i), "the shard is truncated")
        return data

    def load(self, i: int) -> torch.Tensor:
        return decode_bytes(self.read_bytes(i), self.describe(i), self.max_pixels)

    def describe(self, i: int) -> str:
        return f"{self.urls[int(self.shard[i])]}:{self.keys[i]}"

    @property
    def paths(self) -> list[str]:
        return [self.describe(i) for i in range(len(self))]

    def order(self, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
        """Shards in a seeded order, samples shuffled within each shard: reads stay local to
        one shard at a time (sequential-ish I/O) while the order still changes every epoch."""
        n = len(self)
        if not shuffle:
            return np.lexsort((np.arange(n), self.offset, self.shard)).astype(np.int64)
        rng = np.random.default_rng(_mix(seed, epoch))
        shard_rank = rng.permutation(len(self.urls))
        within = rng.random(n)
        return np.lexsort((within, shard_rank[self.shard])).astype(np.int64)


class DatasetBacking(Backing):
    """Any map-style dataset whose items are ``(image, target)``; images are PIL images or
    tensors/arrays, converted like files (3-channel RGB, ``uint8``)."""

    kind = "dataset items"

    def __init__(self, dataset: Any, index: np.ndarray, source: str = "dataset") -> None:
        self.dataset = dataset
        self.index = np.asarray(index, dtype=np.int64)
        self.source = source

    def __len__(self) -> int:
        return len(self.index)

    def take(self, idx: np.ndarray) -> DatasetBacking:
        return DatasetBacking(self.dataset, self.index[np.asarray(idx, dtype=np.int64)],
                              self.source)  # fmt: skip

    def describe(self, i: int) -> str:
        return f"{self.source}[{int(self.index[i])}]"

    def load(self, i: int) -> torch.Tensor:
        try:
            item = self.dataset[int(self.index[i])]
        except Exception as e:
            raise DecodeError(self.describe(i), f"{type(e).__name__}: {e}") from None
        image = item[0] if isinstance(item, (tuple, list)) else item
        return image_to_uint8(image, self.describe(i))


def image_to_uint8(image: Any, source: str) -> torch.Tensor:
    """A PIL image, array or tensor (HWC or CHW, uint8 or float [0, 1]) -> ``uint8 (C, H, W)``."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    x = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim == 3 and x.shape[0] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(2, 0, 1)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise DecodeError(source, f"an image must be (C, H, W) or (H, W, C), got {tuple(x.shape)}")
    if x.is_floating_point():
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    elif x.dtype != torch.uint8:
        x = x.clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def check_files(
    backing: Backing, name: str, *, progress: bool = True, strict: bool | None = None,
    max_probe: int | None = None, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Probe file headers (no decoding) and summarise; see :meth:`Domain.check`.

    ``max_probe`` probes an evenly spread sample of that many files instead of all (the cheap
    check ``from_folder`` runs at construction). Raises :class:`DataError` when no probed file
    is readable, or when one is not and ``strict`` is true.
    """
    if not isinstance(backing, (FileBacking, ShardBacking)):
        return {"checked": 0, "unreadable": [], "reasons": {}}
    n = len(backing)
    if max_probe is not None and n > max_probe:
        which = np.unique(np.linspace(0, n - 1, max_probe).round().astype(np.int64))
    else:
        which = np.arange(n)

    def one(i: int) -> tuple[int, str | None, tuple | None]:
        try:
            if isinstance(backing, FileBacking):
                head = probe(backing.table[i], backing.max_pixels)
            else:
                from .decode import _open

                im = _open(backing.read_bytes(i), backing.describe(i), backing.max_pixels)
                head = (*im.size, im.format, im.mode)
            return i, None, head
        except DecodeError as e:
            return i, e.reason, None

    results: list[tuple[int, str | None, tuple | None]] = []
    iterator: Any
    with ThreadPoolExecutor(max_workers=4) as pool:
        iterator = pool.map(one, which.tolist(), chunksize=64)
        if progress and len(which) > 2000:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(which), desc=f"checking {name}", unit="file")
        results = list(iterator)
    bad = [(i, reason) for i, reason, _ in results if reason is not None]
    sizes = np.array([h[:2] for _, _, h in results if h is not None], dtype=np.int64)
    summary: dict[str, Any] = {
        "checked": len(results),
        "unreadable": [backing.describe(i) for i, _ in bad],
        "reasons": {backing.describe(i): r for i, r in bad},
        "min_size": tuple(sizes.min(0).tolist()) if len(sizes) else None,
        "max_size": tuple(sizes.max(0).tolist()) if len(sizes) else None,
        "formats": sorted({str(h[2]) for _, _, h in results if h is not None}),
    }
    if bad and len(bad) == len(results):
        examples = "; ".join(f"'{backing.describe(i)}': {r}" for i, r in bad[:3])
        raise DataError(
            f"Domain '{name}': none of the {len(results)} checked files is a readable image "
            f"({examples}). Point it at a folder of images (JPEG, PNG, WebP, BMP, TIFF...)."
        )
    if bad and strict:
        examples = "; ".join(f"'{backing.describe(i)}': {r}" for i, r in bad[:5])
        raise DataError(
            f"Domain '{name}': {len(bad)} of {len(results)} checked files cannot be decoded: "
            f"{examples}. Remove or replace them, or pass strict=False to skip them in training."
        )
    return summary
