"""Image files into lazy :class:`Domain` s: an ImageFolder tree, a CSV/DataFrame manifest, paths.

Nothing here decodes an image: the files are listed (``os.scandir``, ~1 us per file), a spread
sample of at most :data:`PROBE_SAMPLE` headers is read to catch a folder of non-images or
decompression bombs early (~35 us each), and the domain decodes files on demand in ``DataLoader``
workers (``d.dataset(transform)``). ``d.check()`` reads every header when you want the full
picture; ``d.materialize(image_size)`` / ``in_memory=True`` decodes everything into memory (the old
eager behaviour, fine for a few thousand small images).

Listing rules for folders: hidden files and folders (``.ipynb_checkpoints``, ``.DS_Store``,
``.git``...) are skipped; symbolic links are followed, but every directory is entered once by its
real path (a link loop ends instead of repeating images), and a file reached twice is kept once,
under the class folder it really lives in (links are followed only after every real file is
listed).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backing import FileBacking, PathTable, check_files
from .decode import DEFAULT_MAX_PIXELS
from .domain import UNLABELLED, DataError, DataWarning, Domain, check_image_size
from .user_frame import user_stacklevel
from .walk import Walker, relative

#: File extensions listed as images (torchvision's ImageFolder set, plus GIF).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
#: Headers probed at construction (spread over the list); ``check="all"`` probes every file.
PROBE_SAMPLE = 256


def _common(
    name: str, image_size: Any, max_pixels: Any, check: Any
) -> tuple[int | None, int | None]:
    size = check_image_size(image_size)
    if max_pixels is not None and (
        isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1
    ):
        raise DataError(f"max_pixels must be a positive int or None, got {max_pixels!r}.")
    if check not in ("sample", "all", "none", False, None, True):
        raise DataError(f"check must be 'sample', 'all' or 'none', got {check!r}.")
    return size, max_pixels


def _finish(
    domain: Domain,
    *,
    check: Any,
    strict: bool,
    in_memory: bool,
    progress: bool,
) -> Domain:
    """Probe headers as asked, then either keep the domain lazy or decode it into memory."""
    if check in ("sample", "all", True):
        summary = check_files(
            domain.backing,
            domain.name,
            progress=progress,
            strict=strict,
            max_probe=PROBE_SAMPLE if check == "sample" else None,
        )
        if summary["unreadable"]:
            bad = summary["unreadable"]
            warnings.warn(
                f"Domain '{domain.name}': {len(bad)} of {summary['checked']} checked files cannot "
                f"be decoded (e.g. '{bad[0]}': {summary['reasons'][bad[0]]}); they are skipped, with "
                "a warning, wherever they are read (training, evaluation and prediction). "
                "Remove them, or pass strict=True to refuse.",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
    if in_memory:
        return domain.materialize(domain.image_size or 224, strict=strict, progress=progress)
    return domain


def from_folder(
    path: str | os.PathLike,
    *,
    labels: bool = True,
    task: str = "classification",
    image_size: int | None = None,
    in_memory: bool = False,
    strict: bool = False,
    classes: Sequence[str] | None = None,
    name: str | None = None,
    extensions: Sequence[str] = IMG_EXTENSIONS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    check: str = "sample",
    progress: bool = True,
) -> Domain:
    """A folder of images as a lazy domain: nothing is decoded until training reads it.

    ``labels=True`` reads an ImageFolder tree (``path/<class>/<image>``, images found recursively
    inside each class folder; classes are the sorted folder names, as torchvision orders them,
    or ``classes=[...]`` to fix the label set and its order). ``labels=False`` lists every image
    under ``path`` as unlabelled (a target domain, a pool to annotate, new photos to predict).
    ``task="regression"`` reads each sub-folder's name as the target value of its images
    (``ages/23/``, ``ages/41.5/``); for targets that do not fit folder names, list paths and
    values in a CSV (:func:`from_csv` with ``task="regression"``).

    ``image_size`` is the domain's default training size (the engine's ``image_size`` wins when
    both are given); it no longer resizes anything here. ``in_memory=True`` is the old eager
    behaviour: decode every image now, squashed to ``image_size`` (default 224) square, into a
    ``uint8`` tensor (``3 * image_size**2`` bytes per image).

    ``strict=False`` lets training skip files that fail to decode (one warning each, counted);
    ``strict=True`` refuses them. ``check``: ``"sample"`` probes the headers of up to
    :data:`PROBE_SAMPLE` files now, ``"all"`` every file (threads, progress bar), ``"none"``
    nothing. Files over ``max_pixels`` pixels are refused as decompression bombs.
    """
    size, max_pixels = _common("from_folder", image_size, max_pixels, check)
    if task not in ("classification", "regression"):
        raise DataError(f"task must be 'classification' or 'regression', got {task!r}.")
    if task == "regression" and not labels:
        raise DataError(
            "from_folder: task='regression' reads the targets from the folder names; "
            "labels=False has none (leave task out for unlabelled images)."
        )
    regression = task == "regression"
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"from_folder: '{root}' is not a directory. Pass the folder that holds one "
            "sub-folder per class (path/cat/001.jpg, path/dog/002.jpg ...)"
            + (", or labels=False for a folder of unlabelled images." if labels else ".")
        )
    top = os.path.abspath(root)
    walker = Walker(tuple(extensions))
    if labels:
        try:
            folders = sorted(
                e.name
                for e in os.scandir(top)
                if e.is_dir()
                # hidden, unless it names a regression target (".5")
                and (not e.name.startswith(".") or (regression and _value(e.name) is not None))
            )
        except OSError as e:
            raise DataError(f"from_folder: cannot list '{root}' ({e.strerror or e}).") from None
        if classes is None:
            classes = folders
        else:
            classes = [str(c) for c in classes]
            unknown = sorted(set(folders) - set(classes))
            if unknown:
                raise DataError(
                    f"from_folder: folders {unknown[:5]} under '{root}' are not in classes="
                    f"{list(classes)[:10]}; add them to classes, or move them out of '{root}'."
                )
        if not classes:
            raise DataError(
                f"from_folder: '{root}' has no class sub-folders. Put each class's images in its "
                "own sub-folder (path/cat/001.jpg, path/dog/002.jpg ...), or pass labels=False "
                "for a folder of unlabelled images."
            )
        found: list[list[str]] = []
        for k, cls in enumerate(classes):
            folder = os.path.join(top, cls)
            found.append(walker.scan(folder, k) if os.path.isdir(folder) else [])
        for k, p in walker.follow_links():
            found[k].append(p)
        per_class = [sorted(relative(files, top)) for files in found]
        loose = [
            e.name
            for e in os.scandir(top)
            if e.name.lower().endswith(walker.extensions) and not e.name.startswith(".")
        ]
        if loose:
            warnings.warn(
                f"from_folder('{root}'): {len(loose)} image(s) directly in the folder (e.g. "
                f"'{loose[0]}') are in no class folder and are left out. Move them into a class "
                "folder, or use labels=False.",
                DataWarning,
                stacklevel=2,
            )
        empty = [c for c, files in zip(classes, per_class) if not files]
        total = sum(len(f) for f in per_class)
        if total and empty and classes is folders:
            raise DataError(
                f"from_folder: class folder(s) {empty[:5]} under '{root}' hold no images "
                f"(looked for {', '.join(extensions)}). Add images to them or remove them; to "
                "keep an empty class on purpose, name every class with classes=[...]."
            )
        rel = [p for files in per_class for p in files]
        y = np.repeat(np.arange(len(classes)), [len(f) for f in per_class])
        where = f"the class folders {list(classes)[:5]}{'...' if len(classes) > 5 else ''}"
    else:
        listed = walker.scan(top) + [p for _, p in walker.follow_links()]
        rel = sorted(relative(listed, top))
        y = np.full(len(rel), UNLABELLED)
        classes = [str(c) for c in classes] if classes is not None else []
        where = f"'{root}' and its sub-folders"
    walker.warn(str(root))
    if not rel:
        raise DataError(
            f"from_folder: no images under '{root}' (looked for {', '.join(extensions)} in "
            f"{where}; hidden files and folders are skipped). Put the image files there."
        )
    backing = FileBacking(PathTable.from_paths(rel, top), max_pixels)
    domain = Domain(
        labels=torch.from_numpy(y.astype(np.int64)),
        classes=tuple(classes),
        name=name or root.name,
        backing=backing,
        image_size=size,
    )
    if regression:
        domain = _folder_values(domain, root)
    return _finish(domain, check=check, strict=strict, in_memory=in_memory, progress=progress)


def labels_from_values(
    values: Sequence[Any], classes: Sequence[str] | None, what: str
) -> tuple[np.ndarray, list[str]]:
    """Class ids and class names from per-sample labels given as names or integer ids.

    Empty / missing values (``None``, ``""``, NaN) are unlabelled (-1). With ``classes``, names
    must be among them (integers are taken as ids); without, the class set is the sorted
    distinct names -- numerically sorted when every name is an integer ("2" before "10").
    """

    def missing(v: Any) -> bool:
        return (
            v is None
            or (isinstance(v, float) and np.isnan(v))
            or (isinstance(v, str) and not v.strip())
        )

    raw = list(values)
    present = [v for v in raw if not missing(v)]
    names = [str(v).strip() for v in present]
    if isinstance(present[0] if present else None, (float, np.floating)):
        if any(float(v) != int(float(v)) for v in present):
            raise DataError(
                f"{what}: labels must be class names or whole class ids, got fractions."
            )
        names = [str(int(float(v))) for v in present]
    if classes is None:
        distinct = set(names)
        if all(n.lstrip("-").isdigit() for n in distinct):
            classes = sorted(distinct, key=int)
        else:
            classes = sorted(distinct)
    classes = [str(c) for c in classes]
    lookup = {c: i for i, c in enumerate(classes)}
    ids = np.full(len(raw), UNLABELLED, dtype=np.int64)
    unknown: list[str] = []
    it = iter(names)
    for k, v in enumerate(raw):
        if missing(v):
            continue
        n = next(it)
        if n in lookup:
            ids[k] = lookup[n]
        elif n.isdigit() and int(n) < len(classes):
            ids[k] = int(n)
        else:
            unknown.append(n)
    if unknown:
        raise DataError(
            f"{what}: labels {sorted(set(unknown))[:5]} are not among classes={classes[:10]}; "
            "add them to classes=[...] or fix the labels."
        )
    return ids, classes


def _file_domain(
    paths: list[str],
    label_values: Sequence[Any] | None,
    *,
    root: str,
    classes: Sequence[str] | None,
    name: str,
    image_size: Any,
    in_memory: bool,
    strict: bool,
    max_pixels: Any,
    check: Any,
    progress: bool,
    what: str,
) -> Domain:
    size, max_pixels = _common(what, image_size, max_pixels, check)
    if not paths:
        raise DataError(f"{what}: no paths given; pass at least one image file.")
    bad = [p for p in paths if not isinstance(p, (str, os.PathLike)) or not str(p).strip()]
    if bad:
        raise DataError(f"{what}: {len(bad)} path(s) are empty or not strings (e.g. {bad[0]!r}).")
    full = [os.path.join(root, os.fspath(p)) if root else os.fspath(p) for p in paths]
    missing = [p for p in full if not os.path.isfile(p)]
    if missing:
        hint = f" (relative paths are read under root='{root}')" if root else ""
        raise DataError(
            f"{what}: {len(missing)} of {len(full)} files do not exist or are not files, e.g. "
            f"{missing[:3]}{hint}. Fix the paths or root=, or drop those rows."
        )
    if label_values is None:
        y = np.full(len(paths), UNLABELLED, dtype=np.int64)
        classes = [str(c) for c in classes] if classes is not None else []
    else:
        if len(label_values) != len(paths):
            raise DataError(
                f"{what}: {len(paths)} paths but {len(label_values)} labels; give one each."
            )
        y, classes = labels_from_values(label_values, classes, what)
        unlabelled = int((y == UNLABELLED).sum())
        if unlabelled:
            warnings.warn(
                f"{what}: {unlabelled} of {len(y)} samples have no label and are unlabelled.",
                DataWarning,
                stacklevel=3,
            )
    backing = FileBacking(PathTable.from_paths([os.path.abspath(p) for p in full]), max_pixels)
    domain = Domain(
        labels=torch.from_numpy(y),
        classes=tuple(classes),
        name=name,
        backing=backing,
        image_size=size,
    )
    return _finish(domain, check=check, strict=strict, in_memory=in_memory, progress=progress)


def from_paths(
    paths: Sequence[str | os.PathLike],
    labels: Sequence[Any] | None = None,
    *,
    classes: Sequence[str] | None = None,
    name: str = "paths",
    image_size: int | None = None,
    in_memory: bool = False,
    strict: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    check: str = "sample",
    progress: bool = True,
) -> Domain:
    """A list of image files (and optional labels: class names or ids) as a lazy domain.

    Every path must exist (checked now, ~2 us a file). Labels map to classes as in
    :func:`from_csv`; ``None`` leaves every sample unlabelled. Other options as in
    :func:`from_folder`.
    """
    return _file_domain(
        [os.fspath(p) for p in paths], labels, root="", classes=classes, name=name,
        image_size=image_size, in_memory=in_memory, strict=strict, max_pixels=max_pixels,
        check=check, progress=progress, what="from_paths",
    )  # fmt: skip


def _value(name: str) -> float | None:
    """The finite number a folder name spells (``"41.5"``, ``".5"``, ``"-1e1"``), else ``None``."""
    try:
        value = float(name)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _folder_values(domain: Domain, root: Path) -> Domain:
    """The class-folder domain as a regression one: each folder's name is its images' target."""
    values = [_value(name) for name in domain.classes]
    for name, value in zip(domain.classes, values):
        if value is None:
            raise DataError(
                f"from_folder: task='regression' reads each sub-folder's name as the target "
                f"value; '{name}' under '{root}' is not a number. Name the folders by value "
                "(path/2.5/..., path/10/...), or list paths and targets in a CSV: "
                "from_csv(file, label_column=..., task='regression')."
            )
    y = torch.tensor(values, dtype=torch.float32)[domain.labels]
    return dataclasses.replace(domain, labels=y, clean_labels=y, classes=(), task="regression")
