"""WebDataset tar shards: ``pack`` a folder or domain into them, ``from_shards`` reads them back.

The shards are plain WebDataset tars written by the ``webdataset`` package (one member per
sample and field: ``00000042.jpg``, ``00000042.cls``), so any WebDataset reader reads them.
Beside them ``pack`` writes a small sidecar index, ``<name>-index.json`` (classes, counts, shard
list: human-readable) and ``<name>-index.npz`` (per sample: label, clean label, shard number and
the byte offset and size of its image inside the tar). With it a shard domain knows its labels
and length without opening a shard, and reads any sample with one seek -- so splits, few-labels,
noise and ``d.dataset()`` work exactly as for folders, and ``d.stream()`` / ``d.epoch_order()``
iterate shard by shard (seeded shard order, shuffled within each shard) for sequential I/O.

Shards written by other tools (no index) are indexed by reading the tar headers once (no image
is decoded); their labels come from ``.cls`` members when present.

Images are stored as their original file bytes (no re-encoding: a JPEG stays the same JPEG);
in-memory images are encoded as PNG (lossless). Packing decodes no file; reading a shard sample hands the
photo pipelines its bytes undecoded, so a camera JPEG in a shard is decoded at the DCT scale the
crop needs (:mod:`tlkit.datasets.reduced`), exactly as from a folder.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backing import FileBacking, PathTable, ShardBacking
from .decode import DEFAULT_MAX_PIXELS
from .domain import UNLABELLED, DataError, Domain, check_image_size

FORMAT = "tlkit-shards/1"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff", "gif")


def _expand(urls: str | os.PathLike | list[Any]) -> list[str]:
    if isinstance(urls, (list, tuple)):
        return [os.fspath(u) for u in urls]
    import braceexpand

    return [os.path.expanduser(u) for u in braceexpand.braceexpand(os.fspath(urls))]


def pack(
    folder_or_domain: str | os.PathLike | Domain,
    out_dir: str | os.PathLike,
    *,
    name: str = "data",
    shard_size: int = 1000,
    max_shard_bytes: int = 256 * 2**20,
    progress: bool = True,
) -> str:
    """Write WebDataset tar shards of an image folder or domain; returns the brace pattern
    (``"out/data-{000000..000009}.tar"``) that :func:`from_shards` takes.

    A folder is read with :func:`~tlkit.datasets.from_folder` (class sub-folders = labels).
    Labels, clean labels and classes go into the sidecar index. ``shard_size`` samples (or
    ``max_shard_bytes``) per shard; WebDataset suggests shards of 100 MB - 1 GB for remote
    storage, smaller ones shuffle better across workers.
    """
    import webdataset as wds

    from .files import from_folder

    domain = (
        from_folder(folder_or_domain)
        if not isinstance(folder_or_domain, Domain)
        else (folder_or_domain)
    )
    if domain.modality != "image":
        raise DataError(
            f"pack() writes image shards; Domain '{domain.name}' holds tensors, which fit in "
            "memory: save them with torch.save(domain.inputs, ...) instead."
        )
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise DataError(f"shard_size must be a positive int, got {shard_size!r}.")
    if not name or "/" in name or name.startswith("."):
        raise DataError(f"name must be a plain file-name prefix, got {name!r}.")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    old = sorted(out.glob(f"{name}-[0-9]*.tar"))
    if old:
        raise DataError(
            f"pack(): '{out}' already holds shards named {name}-*.tar ({len(old)}); choose another "
            "out_dir or name=, or delete them first."
        )
    backing = domain.backing
    pattern = os.fspath(out / f"{name}-%06d.tar")
    labels = domain.labels.numpy()
    iterator: Any = range(len(domain))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"packing {domain.name}", unit="image")
    with wds.ShardWriter(pattern, maxcount=shard_size, maxsize=max_shard_bytes, verbose=0) as sink:
        for i in iterator:
            data, ext = _encoded(backing, i)
            sink.write({"__key__": f"{i:08d}", ext: data, "cls": str(int(labels[i]))})
    shards = sorted(out.glob(f"{name}-[0-9]*.tar"))
    index = _scan([os.fspath(s) for s in shards], progress=False)
    if len(index["key"]) != len(domain):
        raise DataError(f"pack(): wrote {len(domain)} samples but indexed {len(index['key'])}.")
    order = np.argsort([int(k.split(".", 1)[0]) for k in index["key"]])  # the domain's order
    np.savez(
        out / f"{name}-index.npz",
        labels=labels,
        clean_labels=domain.clean_labels.numpy(),
        shard=index["shard"][order],
        offset=index["offset"][order],
        size=index["size"][order],
        keys=np.asarray([index["key"][j] for j in order]),
    )
    counts = np.bincount(index["shard"], minlength=len(shards)).tolist()
    meta = {
        "format": FORMAT,
        "name": domain.name,
        "task": domain.task,
        "classes": list(domain.classes),
        "count": len(domain),
        "shards": [{"file": s.name, "count": c} for s, c in zip(shards, counts)],
        "class_counts": (
            np.bincount(labels[labels != UNLABELLED], minlength=domain.num_classes).tolist()
            if domain.task == "classification"
            else []
        ),
        "image_size": domain.image_size,
    }
    (out / f"{name}-index.json").write_text(json.dumps(meta, indent=1))
    return os.fspath(out / f"{name}-{{{0:06d}..{len(shards) - 1:06d}}}.tar")


def _encoded(backing: Any, i: int) -> tuple[bytes, str]:
    """The sample's encoded image bytes and extension, without re-encoding files."""
    if isinstance(backing, FileBacking):
        path = backing.table[i]
        ext = os.path.splitext(path)[1].lower().lstrip(".") or "img"
        with open(path, "rb") as f:
            return f.read(), "jpg" if ext == "jpeg" else ext
    if isinstance(backing, ShardBacking):
        ext = os.path.splitext(backing.keys[i])[1].lstrip(".") or "img"
        return backing.read_bytes(i), ext
    from PIL import Image

    x = backing.load(i)
    arr = x.permute(1, 2, 0).numpy()
    im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue(), "png"


def _scan(urls: list[str], progress: bool = True) -> dict[str, Any]:
    """Index tar shards from their headers: per image member its shard, offset and size, and
    the label from a ``.cls`` member of the same key when there is one."""
    shard, offset, size, keys, label = [], [], [], [], []
    iterator: Any = enumerate(urls)
    if progress and len(urls) > 1:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(urls), desc="indexing shards", unit="shard")
    for s, url in iterator:
        if not os.path.isfile(url):
            raise DataError(f"from_shards: shard '{url}' does not exist; check the pattern.")
        cls: dict[str, int] = {}
        first = len(keys)
        try:
            with tarfile.open(url, "r:") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    base = os.path.basename(m.name)
                    key, _, ext = base.partition(".")
                    key = os.path.join(os.path.dirname(m.name), key)
                    ext = ext.lower()
                    if ext in IMAGE_EXTS:
                        shard.append(s)
                        offset.append(m.offset_data)
                        size.append(m.size)
                        keys.append(f"{key}.{ext}")
                    elif ext in ("cls", "label", "cls.txt"):
                        f = tar.extractfile(m)
                        text = f.read().decode().strip() if f is not None else ""
                        try:
                            cls[key] = int(text)
                        except ValueError:
                            cls[key] = UNLABELLED
        except (tarfile.TarError, OSError) as e:
            raise DataError(
                f"from_shards: '{url}' is not a readable tar shard ({e}). Compressed shards "
                "(.tar.gz) cannot be read by seeking; unpack them or re-pack with "
                "tlkit.datasets.pack()."
            ) from None
        for k in keys[first:]:
            label.append(cls.get(k.rsplit(".", 1)[0], UNLABELLED))
    return {
        "shard": np.asarray(shard, dtype=np.int64),
        "offset": np.asarray(offset, dtype=np.int64),
        "size": np.asarray(size, dtype=np.int64),
        "key": keys,
        "label": np.asarray(label, dtype=np.int64),
    }


def _find_index(urls: list[str]) -> Path | None:
    folder = Path(urls[0]).parent
    first = Path(urls[0]).name
    for candidate in sorted(folder.glob("*-index.json")):
        try:
            meta = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("format") == FORMAT and first in {s["file"] for s in meta.get("shards", [])}:
            return candidate
    return None


def from_shards(
    urls: str | os.PathLike | list[str],
    *,
    index: str | os.PathLike | None = None,
    classes: list[str] | None = None,
    name: str | None = None,
    image_size: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Domain:
    """A domain over WebDataset tar shards (``"out/data-{000000..000009}.tar"`` or a list).

    The sidecar index written by :func:`pack` is found beside the shards (or pass ``index=``
    the ``-index.json`` file); its labels and byte offsets make this instant. Shards without one
    are indexed from their tar headers (no image decoded; labels from ``.cls`` members).
    """
    files = _expand(urls)
    if not files:
        raise DataError(f"from_shards: the pattern {urls!r} names no shard.")
    size = check_image_size(image_size)
    meta_path = Path(index).expanduser() if index is not None else _find_index(files)
    if meta_path is not None:
        try:
            meta = json.loads(meta_path.read_text())
            arrays = np.load(meta_path.with_suffix(".npz"), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"from_shards: cannot read the index '{meta_path}' ({e}).") from None
        listed = [s["file"] for s in meta["shards"]]
        by_name = {os.path.basename(f): f for f in files}
        missing = [f for f in listed if f not in by_name]
        if missing:
            raise DataError(
                f"from_shards: the index '{meta_path}' lists shards {missing[:3]} that the "
                f"pattern {urls!r} does not name; pass the full pattern "
                f"(e.g. {Path(files[0]).parent}/{listed[0].rsplit('-', 1)[0]}-"
                f"{{000000..{len(listed) - 1:06d}}}.tar)."
            )
        shard_files = [by_name[f] for f in listed]
        for f in shard_files:
            if not os.path.isfile(f):
                raise DataError(f"from_shards: shard '{f}' does not exist.")
        backing = ShardBacking(
            shard_files, arrays["shard"], arrays["offset"], arrays["size"],
            PathTable.from_paths([str(k) for k in arrays["keys"]]), max_pixels,
        )  # fmt: skip
        return Domain(
            labels=torch.from_numpy(arrays["labels"]),
            clean_labels=torch.from_numpy(arrays["clean_labels"]),
            classes=tuple(classes or meta["classes"]),
            name=name or meta["name"],
            task=meta["task"],
            backing=backing,
            image_size=size or meta.get("image_size"),
        )
    scanned = _scan(files)
    if not scanned["key"]:
        raise DataError(f"from_shards: no image members in {len(files)} shard(s) {files[:2]}.")
    backing = ShardBacking(
        files, scanned["shard"], scanned["offset"], scanned["size"],
        PathTable.from_paths(scanned["key"]), max_pixels,
    )  # fmt: skip
    y = torch.from_numpy(scanned["label"])
    if classes is None:
        known = y[y != UNLABELLED]
        classes = [str(i) for i in range(int(known.max()) + 1)] if len(known) else []
    return Domain(
        labels=y, classes=tuple(classes), name=name or Path(files[0]).stem.rsplit("-", 1)[0],
        backing=backing, image_size=size,
    )  # fmt: skip
