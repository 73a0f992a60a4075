"""Frozen-backbone features of large sets, on disk: written once, reused by later runs.

Feature extraction trains only a head on features the frozen backbone computes once. For a few
thousand images they live in memory; for 100k photos they would not (100k x 1280 floats is half
a gigabyte, and more per held-out set), so beyond ``feature_ram_budget`` they go to a float16
memory-mapped file under ``$TLKIT_CACHE/features`` (``~/.cache/tlkit/features``). The file is
named by a key of everything that decides its contents -- the backbone's name and weights, the
samples' content (:mod:`tlkit.engine.fingerprint`: each file's name, size and modification time,
or the bytes of an in-memory tensor), the preprocessing (image size and evaluation transform) --
so a second run on the same data and backbone reuses it instead of decoding every image again,
and any change, an image overwritten in place included, makes a new file. A file is used only once a
``.done`` marker says it was written to the end; a run killed half-way starts it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit.datasets.domain import Domain
from tlkit.engine import fingerprint


def cache_root() -> Path:
    base = os.environ.get("TLKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tlkit")
    return Path(base) / "features"


def _digest(*parts: Any) -> str:
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(str(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


def key_of(model: nn.Module, domain: Domain, image_size: int, precision: str = "fp32") -> str:
    """What the features depend on: backbone (name and weights), the samples' content (every
    byte of an in-memory tensor; each file's name, size and modification time), preprocessing,
    and the precision they were computed in."""
    backbone = model.backbone
    weights = _digest(*backbone.state_dict().values())
    samples = fingerprint.content_digest(domain, exact=True)
    from tlkit.datasets import transforms

    preprocessing = transforms.describe(transforms.eval_transform(image_size))
    return _digest(
        backbone.name, weights, len(domain), samples, image_size, preprocessing, precision
    )


class FeatureStore:
    """One set's features in a float16 memmap ``(N, D)``; ``indices`` say which rows were
    written (files that could not be read have none).

    A store is written into a temporary folder of its own and renamed into place when complete,
    so concurrent writers (DDP ranks, two runs in one process) never see each other's half-written
    files; whoever finishes second keeps the first one's folder."""

    def __init__(self, folder: Path, n: int, d: int) -> None:
        self.folder, self.n, self.d = folder, n, d
        self.complete = (folder / ".done").exists()
        if self.complete:
            self._open(folder)
        else:
            folder.parent.mkdir(parents=True, exist_ok=True)
            self.work = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
            self.array = np.memmap(self.work / "features.f16", dtype=np.float16, mode="w+",
                                   shape=(n, d))  # fmt: skip
            self.indices = torch.empty(0, dtype=torch.long)

    def _open(self, folder: Path) -> None:
        self.array = np.memmap(
            folder / "features.f16", dtype=np.float16, mode="r", shape=(self.n, self.d)
        )
        self.indices = torch.from_numpy(np.load(folder / "indices.npy"))

    def write(self, features: torch.Tensor, indices: torch.Tensor) -> None:
        self.array[indices.numpy()] = features.detach().to(torch.float16).cpu().numpy()

    def finish(self, indices: torch.Tensor) -> None:
        self.array.flush()
        np.save(self.work / "indices.npy", indices.numpy())
        (self.work / "meta.json").write_text(json.dumps({"n": self.n, "d": self.d}))
        (self.work / ".done").touch()
        del self.array
        try:
            os.rename(self.work, self.folder)  # atomic; fails when another writer got there first
        except OSError:
            shutil.rmtree(self.work, ignore_errors=True)
        self._open(self.folder)
        self.complete = True

    @property
    def rows(self) -> torch.Tensor:
        """The written rows, in the order of :attr:`indices` (read from disk on demand)."""
        return _Rows(self.array, self.indices)


class _Rows:
    """Indexable like a tensor of the stored rows: ``rows[r]`` reads those rows from disk."""

    def __init__(self, array: np.memmap, indices: torch.Tensor) -> None:
        self.array, self.indices = array, indices
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        picked = self.indices[rows.cpu()].numpy()
        return torch.from_numpy(np.asarray(self.array[picked], dtype=np.float32))


def open_store(
    model: nn.Module, domain: Domain, name: str, image_size: int, n: int, d: int,
    precision: str = "fp32",
) -> FeatureStore:  # fmt: skip
    key = key_of(model, domain, image_size, precision)[:20]
    return FeatureStore(cache_root() / f"{name}-{key}", n, d)


def features(
    model: nn.Module,
    batches: Any,
    domain: Domain,
    key: str,
    image_size: int,
    config: Any,
    precision: str,
) -> tuple[Any, torch.Tensor]:
    """``(rows, indices)``: frozen-backbone features of one set, in memory (on the device) when
    they fit ``config.feature_ram_budget``, else from -- or written once to -- a float16 file."""
    from tlkit.engine.evaluate import predict

    d = model.backbone.num_features
    if len(domain) * d * 4 <= config.feature_ram_budget * 1e9:
        p = predict(model, batches, to_cpu=False, outputs=False, precision=precision)
        return p.features, p.indices
    store = open_store(model, domain, key, image_size, len(domain), d, precision)
    if not store.complete:
        p = predict(model, batches, sink=store.write, outputs=False, precision=precision)
        store.finish(p.indices)
    return store.rows, store.indices
