"""The bundled datasets: built offline from files that installed packages ship, then cached.

Nothing is downloaded, ever. Three single domains, all with classes ``"0" .. "9"``:

* ``digits`` -- scikit-learn's ``load_digits``: 1797 handwritten digits, 8x8, one channel
  (values 0..16 scaled to 0..255).
* ``synth-digits`` -- 3000 digits (300 per class) rendered with the TrueType fonts matplotlib
  ships (DejaVu, STIX, Computer Modern; several weights and slants) with random stroke width,
  rotation, shear, scale, shift, contrast and a light blur; 32x32, one channel.
* ``digits-m`` -- the MNIST-M recipe (Ganin & Lempitsky, 2015) on scikit-learn digits: each digit
  upsampled to 32x32 and blended with a random 32x32 colour patch ``p`` cut from the sample
  photos of scikit-image and scikit-learn, ``out = |p - digit|`` per channel; 3 channels.

Beyond images, tensor domains (``d.inputs``, no image transforms apply):

* ``wine`` (178 x 13, 3 classes) and ``breast-cancer`` (569 x 30, 2 classes) -- scikit-learn's
  bundled tabular classification sets; ``diabetes`` (442 x 10) -- its regression set (target:
  disease progression after one year, 25..346). Raw features, as scikit-learn ships them: the
  ``mlp`` backbone standardises its input itself (a BatchNorm without affine parameters), so
  new rows need no separate scaler.
* ``docstrings`` / ``docstrings-pretrain`` -- which library a docstring comes from, tokenised
  offline (:mod:`tlkit.datasets.text`); two related tasks for pretrain -> fine-tune.

A *pair* ``"A->B"`` is a domain-adaptation task: labelled source A, unlabelled target B. Its four
splits are brought to one image shape (the larger height/width, grey repeated to RGB when either
side is colour) so that one network reads both domains.

Each built domain is cached as ``<cache>/datasets/<name>-<version>-seed<seed>.npz``, where the
cache is the ``cache_dir`` argument, else ``$TLKIT_CACHE``, else ``~/.cache/tlkit``. Bump a
builder's version when its output changes so stale caches are ignored.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .domain import DataError, Domain, check_image_size
from .pair import DomainPair
from .sources import _resize

log = logging.getLogger(__name__)

DIGIT_CLASSES = tuple(str(i) for i in range(10))


class Builder(NamedTuple):
    """How to build one bundled domain; ``version`` is part of the cache key."""

    version: str | Callable[[], str]
    build: Callable[[int], Domain]


# -- digits -----------------------------------------------------------------------------------
def _sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(d.target.astype(np.int64))


def build_digits(seed: int = 0) -> Domain:
    """scikit-learn's 8x8 digits as a one-channel domain (``seed`` is unused: no randomness)."""
    images, labels = _sklearn_digits()
    return Domain(images, labels, classes=DIGIT_CLASSES, name="digits")


# -- synth-digits -----------------------------------------------------------------------------
_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
)
_CANVAS = 64  # glyphs are rendered and transformed at 64x64, then averaged down to 32x32
_GLYPH = 44  # glyph box height on the canvas (like MNIST's 20 px box in 28 px)
_STROKES = (0, 1, 2, 3)  # PIL stroke_width at font size 64, i.e. 0 to ~1.5 px at 32x32
_STROKE_P = (0.3, 0.3, 0.25, 0.15)
_PER_CLASS = 300


def _font_paths() -> list[str]:
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = [str(root / f) for f in _FONTS if (root / f).is_file()]
    if not paths:
        raise DataError(
            f"synth-digits: no TrueType fonts found in {root}; reinstall matplotlib "
            "(it ships the DejaVu fonts)."
        )
    return paths


def _glyph_templates() -> torch.Tensor:
    """Every (font, stroke, digit) glyph, centred and height-normalised: ``(F, S, 10, 64, 64)``."""
    from PIL import Image, ImageDraw, ImageFont

    paths = _font_paths()
    out = np.zeros((len(paths), len(_STROKES), 10, _CANVAS, _CANVAS), dtype=np.uint8)
    big = 2 * _CANVAS
    for fi, path in enumerate(paths):
        font = ImageFont.truetype(path, 64)
        for si, stroke in enumerate(_STROKES):
            for d in range(10):
                im = Image.new("L", (big, big))
                ImageDraw.Draw(im).text(
                    (big // 2, big // 2),
                    str(d),
                    font=font,
                    fill=255,
                    anchor="mm",
                    stroke_width=stroke,
                    stroke_fill=255,
                )
                im = im.crop(im.getbbox())
                gw, gh = im.size
                f = min(_GLYPH / gh, _GLYPH / gw)
                im = im.resize((max(1, round(gw * f)), max(1, round(gh * f))), Image.BILINEAR)
                canvas = Image.new("L", (_CANVAS, _CANVAS))
                canvas.paste(im, ((_CANVAS - im.size[0]) // 2, (_CANVAS - im.size[1]) // 2))
                out[fi, si, d] = np.asarray(canvas)
    return torch.from_numpy(out)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur of ``(N, 1, H, W)`` with a 5x5 kernel of std ``sigma`` (N,)."""
    n = x.shape[0]
    t = torch.arange(-2, 3, dtype=x.dtype)
    k1 = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).unsqueeze(1)  # (N, 1, 5, 5)
    y = F.conv2d(
        F.pad(x.reshape(1, n, *x.shape[-2:]), (2, 2, 2, 2), mode="replicate"), k2, groups=n
    )
    return y.reshape_as(x)


def build_synth_digits(seed: int = 0) -> Domain:
    """Font-rendered digits, randomly transformed; 32x32 grey, 300 per class."""
    rng = np.random.default_rng(seed)
    templates = _glyph_templates()
    nf, ns = templates.shape[:2]
    n = 10 * _PER_CLASS
    labels = rng.permutation(np.repeat(np.arange(10), _PER_CLASS))
    font = rng.integers(0, nf, n)
    stroke = rng.choice(ns, n, p=_STROKE_P)
    x = templates[font, stroke, labels].unsqueeze(1).float() / 255  # (N, 1, 64, 64)

    angle = np.deg2rad(rng.uniform(-15, 15, n))
    shear = rng.uniform(-0.2, 0.2, n)
    scale = rng.uniform(0.7, 1.05, n)
    aspect = rng.uniform(0.85, 1.15, n)
    shift = rng.uniform(-0.12, 0.12, (n, 2))
    # inverse affine (output -> template coords) in normalised [-1, 1] space
    cos, sin = np.cos(angle), np.sin(angle)
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0] = cos / (scale * aspect)
    theta[:, 0, 1] = (cos * shear - sin) / scale
    theta[:, 1, 0] = sin / (scale * aspect)
    theta[:, 1, 1] = (sin * shear + cos) / scale
    theta[:, :, 2] = shift
    theta_t = torch.from_numpy(theta).float()
    chunks = []
    for sl in torch.arange(n).split(1000):
        grid = F.affine_grid(theta_t[sl], [len(sl), 1, _CANVAS, _CANVAS], align_corners=False)
        y = F.grid_sample(x[sl], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        chunks.append(F.avg_pool2d(y, 2))  # antialiased 64 -> 32
    x = torch.cat(chunks)
    x = _blur(x, torch.from_numpy(rng.uniform(0.3, 1.0, n)).float())
    peak = x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    ink = torch.from_numpy(rng.uniform(0.75, 1.0, n)).float().view(n, 1, 1, 1)
    x = (x / peak * ink * 255).round_().clamp_(0, 255).to(torch.uint8)
    return Domain(x, torch.from_numpy(labels), classes=DIGIT_CLASSES, name="synth-digits")


# -- digits-m ---------------------------------------------------------------------------------
_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")  # shipped inside scikit-image's wheel


def _photos() -> list[np.ndarray]:
    """RGB ``uint8`` photos shipped with scikit-image and scikit-learn (no pooch download)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(getattr(skimage.data, name)())[..., :3] for name in _PHOTOS]
    photos += [np.asarray(im)[..., :3] for im in load_sample_images().images]
    return photos


def build_digits_m(seed: int = 0) -> Domain:
    """MNIST-M on scikit-learn digits: ``|patch - digit|`` with random photo patches; 32x32 RGB."""
    rng = np.random.default_rng(seed)
    images, labels = _sklearn_digits()
    digits = _resize(images, 32).numpy().astype(np.int16)  # (N, 1, 32, 32)
    photos = _photos()
    n = len(digits)
    which = rng.integers(0, len(photos), n)
    out = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        p = photos[which[i]]
        top = rng.integers(0, p.shape[0] - 32 + 1)
        left = rng.integers(0, p.shape[1] - 32 + 1)
        patch = p[top : top + 32, left : left + 32].transpose(2, 0, 1).astype(np.int16)
        out[i] = np.abs(patch - digits[i])
    return Domain(torch.from_numpy(out), labels, classes=DIGIT_CLASSES, name="digits-m")


# -- tabular (scikit-learn's bundled sets) ---------------------------------------------------
_TABULAR = {
    "wine": ("load_wine", "classification"),
    "breast-cancer": ("load_breast_cancer", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}


def build_tabular(name: str, seed: int = 0) -> Domain:
    """A scikit-learn tabular set as a tensor domain of float32 features (``seed`` unused)."""
    import sklearn.datasets

    loader, task = _TABULAR[name]
    d = getattr(sklearn.datasets, loader)()
    x = torch.from_numpy(np.asarray(d.data, dtype=np.float32))
    info = {"feature_names": [str(f) for f in d.feature_names]}
    if task == "regression":
        y = torch.from_numpy(np.asarray(d.target, dtype=np.float32))
        return Domain(labels=y, name=name, task=task, inputs=x, info=info)
    names_ = tuple(str(c) for c in d.target_names)
    return Domain(labels=torch.from_numpy(d.target.astype(np.int64)), classes=names_, name=name,
                  inputs=x, info=info)  # fmt: skip


def _text(task: str) -> Builder:
    from . import text

    return Builder(
        lambda: "3-" + text.versions(task), lambda seed: text.build_docstrings(task, seed)
    )


def _tabular(name: str) -> Builder:
    return Builder("1", lambda seed: build_tabular(name, seed))


_BUILDERS: dict[str, Builder] = {
    "digits": Builder("1", build_digits),
    "synth-digits": Builder("1", build_synth_digits),
    "digits-m": Builder("1", build_digits_m),
    "wine": _tabular("wine"),
    "breast-cancer": _tabular("breast-cancer"),
    "diabetes": _tabular("diabetes"),
    "docstrings": _text("docstrings"),
    "docstrings-pretrain": _text("docstrings-pretrain"),
}
#: Image domains: the only ones that pair up as ``"A->B"`` (one network reads both sides).
_IMAGE_DOMAINS = ("digits", "synth-digits", "digits-m")

#: Pairs listed first by :func:`names` (the ones the book and benchmarks use).
_NAMED_PAIRS = ("synth-digits->digits", "digits->digits-m")


# -- cache ------------------------------------------------------------------------------------
def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where built datasets live: ``cache_dir``, else ``$TLKIT_CACHE``, else ``~/.cache/tlkit``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TLKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tlkit"


def cache_path(name: str, seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ``.npz`` file a bundled domain is cached in (keyed by name, builder version, seed)."""
    builder = _builder(name)
    version = builder.version() if callable(builder.version) else builder.version
    if len(version) > 40:  # library versions in the key: keep the file name short
        import hashlib

        version = version.split("-", 1)[0] + "-" + hashlib.sha1(version.encode()).hexdigest()[:12]
    return cache_root(cache_dir) / "datasets" / f"{name}-v{version}-seed{int(seed)}.npz"


def _builder(name: str) -> Builder:
    try:
        return _BUILDERS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(names())}.") from None


def _read(path: Path, name: str) -> Domain | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        labels, classes = arrays["labels"], arrays["classes"]
        if "images" in arrays:
            return Domain(
                torch.from_numpy(arrays["images"]),
                torch.from_numpy(labels),
                classes=tuple(str(c) for c in classes),
                name=name,
            )
        meta: dict[str, Any] = json.loads(str(arrays["meta"]))
        return Domain(
            labels=torch.from_numpy(labels),
            classes=tuple(str(c) for c in classes),
            name=name,
            task=meta["task"],
            inputs=torch.from_numpy(arrays["inputs"]),
            info=meta["info"],
        )
    except FileNotFoundError:
        return None
    except Exception as e:  # truncated or foreign file: rebuild it
        warnings.warn(f"ignoring unreadable cache file {path} ({e}); rebuilding", stacklevel=3)
        return None


def _write(path: Path, domain: Domain) -> None:
    """Write atomically: a temp file in the same directory, then ``os.replace``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                if domain.modality == "image":
                    arrays = {"images": domain.images.numpy()}
                else:
                    meta = {"task": domain.task, "info": dict(domain.info)}
                    arrays = {"inputs": domain.inputs.numpy(), "meta": np.array(json.dumps(meta))}
                np.savez_compressed(
                    f,
                    labels=domain.clean_labels.numpy(),
                    classes=np.array(domain.classes, dtype=str),
                    **arrays,
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:  # read-only home, full disk ...: still usable, just not cached
        warnings.warn(f"could not cache dataset at {path} ({e}); it will be rebuilt", stacklevel=3)


def build(name: str, seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Domain:
    """One whole bundled domain (before any split), from the cache or built and cached."""
    builder = _builder(name)
    path = cache_path(name, seed, cache_dir)
    domain = _read(path, name)
    if domain is None:
        log.info("building dataset %s (seed %d) into %s", name, seed, path)
        domain = builder.build(seed)
        _write(path, domain)
    return domain


# -- public API -------------------------------------------------------------------------------
def names() -> list[str]:
    """Every name :func:`load` accepts: the single domains, then the ``"A->B"`` pairs."""
    singles = list(_BUILDERS)
    images = _IMAGE_DOMAINS
    pairs = list(_NAMED_PAIRS)
    pairs += [f"{a}->{b}" for a in images for b in images if a != b and f"{a}->{b}" not in pairs]
    return singles + pairs


def _conform(d: Domain | None, size: tuple[int, int], channels: int) -> Domain | None:
    if d is None or d.modality != "image" or (d.image_shape == (channels, *size)):
        return d
    images = _resize(d.images, size)
    if images.shape[1] != channels:
        images = images.expand(-1, channels, -1, -1)
    return Domain(images, d.labels, d.clean_labels, d.classes, d.name, d.task)


def load(
    name: str,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> DomainPair:
    """A bundled task by name: a single domain (``"digits"``) or a pair (``"synth-digits->digits"``).

    Single domain: ``source``/``source_test`` are a stratified train/test split, no target.
    Pair ``A->B``: A's splits are the source; B's train split is the ``target`` with its labels
    hidden (clean labels kept for evaluation), B's test split is ``target_test``. Both sides are
    brought to one image shape. ``image_size`` resizes every split (e.g. 96 for an ImageNet
    backbone) and is the size ``fit`` trains them at unless its own ``image_size=`` differs.
    ``seed`` drives both the random generation and the split.
    """
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {type(name).__name__}.")
    parts = [p.strip() for p in name.split("->")]
    if len(parts) > 2 or any(p not in _BUILDERS for p in parts):
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(names())}.")
    if len(parts) == 2 and any(p not in _IMAGE_DOMAINS for p in parts):
        raise DataError(
            f"{name!r}: only image domains pair up ({', '.join(_IMAGE_DOMAINS)}); load "
            f"{parts[0]!r} and {parts[1]!r} separately."
        )
    image_size = check_image_size(image_size)
    if image_size is not None and parts[0] not in _IMAGE_DOMAINS:
        raise DataError(f"{name!r} holds tensor inputs; image_size does not apply to it.")
    src_train, src_test = build(parts[0], seed, cache_dir).split(test_fraction, seed)
    tgt = tgt_test = None
    if len(parts) == 2:
        tgt_train, tgt_test = build(parts[1], seed, cache_dir).split(test_fraction, seed)
        tgt = tgt_train.unlabelled()
    splits = [src_train, src_test, tgt, tgt_test]
    if src_train.modality != "image":
        return DomainPair(src_train, src_test, name=parts[0])
    shapes = [d.image_shape for d in splits if d is not None]
    channels = max(s[0] for s in shapes)
    if image_size is not None:
        size = (image_size, image_size)
    else:
        size = (max(s[1] for s in shapes), max(s[2] for s in shapes))
    splits = [_conform(d, size, channels) for d in splits]
    if image_size is not None:  # the size asked for is the size fit() trains at
        splits = [None if d is None else replace(d, image_size=image_size) for d in splits]
    return DomainPair(*splits, name="->".join(parts))
