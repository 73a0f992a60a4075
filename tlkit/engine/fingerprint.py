"""Cheap fingerprints of what a domain's samples hold, for run identity and the feature cache.

A name, a size and the labels do not say which images a run read: ``from_arrays(255 - X, y)``
has the same ones as ``from_arrays(X, y)``, and two folders called ``photos`` may hold the same
number of images per class. A fingerprint reads what is cheap to read:

* in-memory tensors: their bytes -- all of them up to :data:`WHOLE_TENSOR_BYTES`, beyond it
  evenly spaced rows totalling about :data:`SAMPLE_BYTES` (``exact=True`` always reads all);
* image files: each file's name below the folder, size and modification time (one ``stat`` per
  file, no decoding), so overwriting an image changes it while moving the folder does not;
* WebDataset shards: each shard's size and modification time, and the members' offsets;
* other datasets: each sample's description and the pixels of a few evenly spaced samples.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch

from tlkit.datasets.backing import FileBacking, ShardBacking
from tlkit.datasets.domain import Domain

#: In-memory tensors up to this size are hashed whole.
WHOLE_TENSOR_BYTES = 256 * 2**20
#: Beyond it, evenly spaced rows of about this many bytes are hashed.
SAMPLE_BYTES = 32 * 2**20
#: Samples decoded to fingerprint a dataset object (its items have no file to stat).
DECODED_SAMPLES = 16


def _hasher() -> Any:
    return hashlib.blake2b(digest_size=16)


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def tensor_digest(t: torch.Tensor, *, exact: bool = False) -> str:
    """A hash of ``t``'s shape, dtype and bytes (a strided sample of rows when it is large)."""
    h = _hasher()
    h.update(f"{tuple(t.shape)} {t.dtype}".encode())
    nbytes = t.numel() * t.element_size()
    if exact or nbytes <= WHOLE_TENSOR_BYTES or t.ndim == 0:
        h.update(_tensor_bytes(t))
    else:
        step = -(-nbytes // SAMPLE_BYTES)
        h.update(_tensor_bytes(t[::step]))
    return h.hexdigest()


def _file_stats(h: Any, backing: FileBacking) -> None:
    table = backing.table
    for i in range(len(table)):
        h.update(table.buf[table.starts[i] : table.ends[i]].tobytes())
        try:
            st = os.stat(table[i])
            h.update(f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError as exc:
            h.update(f"|unreadable {exc.errno}\n".encode())


def _shard_stats(h: Any, backing: ShardBacking) -> None:
    for url in backing.urls:
        try:
            st = os.stat(url)
            h.update(f"{os.path.basename(url)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError as exc:
            h.update(f"{os.path.basename(url)}|unreadable {exc.errno}\n".encode())
    for array in (backing.shard, backing.offset, backing.size):
        h.update(np.ascontiguousarray(array).tobytes())


def _decoded_samples(h: Any, domain: Domain) -> None:
    backing = domain.backing
    n = len(backing)
    for i in range(n):
        h.update(f"{backing.describe(i)}\n".encode())
    for i in sorted({int(k) for k in np.linspace(0, n - 1, num=min(n, DECODED_SAMPLES))}):
        try:
            h.update(tensor_digest(backing.load(i), exact=True).encode())
        except Exception as exc:  # an unreadable sample is part of what the data is
            h.update(f"unreadable {type(exc).__name__}".encode())


def content_digest(domain: Domain, *, exact: bool = False) -> str:
    """A hash of what ``domain``'s samples hold (see the module docstring); ``exact`` hashes
    every byte of an in-memory tensor, however large."""
    backing = domain.backing
    if domain.in_memory:
        return tensor_digest(backing.tensor, exact=exact)
    h = _hasher()
    h.update(f"{backing.kind} {len(backing)}\n".encode())
    if isinstance(backing, FileBacking):
        _file_stats(h, backing)
    elif isinstance(backing, ShardBacking):
        _shard_stats(h, backing)
    else:
        _decoded_samples(h, domain)
    return h.hexdigest()


def label_digest(domain: Domain) -> str:
    return tensor_digest(domain.labels, exact=True)


def describe(domain: Domain) -> str:
    """One line naming a domain's size, labels and content, for a run's identity."""
    return (
        f"{len(domain)} samples, labels {label_digest(domain)[:16]}, "
        f"content {content_digest(domain)[:16]}"
    )
