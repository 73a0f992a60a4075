"""A folder of camera-size photos, as people bring them: :func:`make_photo_folder`.

Real photo folders are not the 32 px arrays unit tests like: they hold 12-megapixel JPEGs next to
PNG screenshots, a portrait phone picture stored sideways with an EXIF orientation tag, a file
cut short by an interrupted copy, a ``.jpg`` that is not an image, a ``notes.txt``, a sub-folder
inside a class folder, and a CSV manifest beside them. This module writes such a folder in a few
seconds from the photos scikit-image ships (``skimage.data``: no download).

Each class starts from its own photo (cat, coffee cup, rocket, astronaut...), given its own
colour cast; every image is a different random window of that photo, flipped or not, upscaled
to camera size, with a fine-grained texture (scikit-image's gravel, grass and brick) and a little
grain added at full resolution -- so that the files have the high-frequency detail of real
photos (a smooth upscale would make any downscaling look perfect) and the classes stay
learnable at 32-64 px.
"""

from __future__ import annotations

import csv as _csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The photos classes are drawn from, in order (``skimage.data`` functions, all colour).
BASE_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "immunohistochemistry", "retina")
#: Texture layered over every image at full resolution (``skimage.data`` greyscale textures).
TEXTURES = ("gravel", "grass", "brick")
#: Default camera sizes (width, height), cycled over the images.
CAMERA_SIZES = ((4000, 3000), (3000, 2000), (3264, 2448), (2048, 1536))


@dataclass
class PhotoFolder:
    """What :func:`make_photo_folder` wrote. Paths are relative to ``root`` unless said."""

    root: Path
    classes: list[str]
    #: every readable image, in class order, with its class id and float value
    images: list[str]
    labels: list[int]
    values: list[float]
    jpegs: list[str]
    pngs: list[str]
    #: images whose EXIF orientation tag rotates them (stored sideways)
    rotated: list[str]
    #: images inside a sub-folder of their class folder
    nested: list[str]
    #: files with an image extension that cannot be decoded
    corrupt: list[str]
    #: files without an image extension (a folder listing skips them)
    non_images: list[str]
    #: the manifest (absolute path), or None; its columns are ``csv_columns``
    csv: Path | None
    csv_columns: tuple[str, ...] = ("path", "label", "value")
    #: (width, height) of each readable image as displayed (after EXIF rotation)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def path(self, rel: str) -> Path:
        """The absolute path of ``rel``."""
        return self.root / rel


def _base(name: str) -> np.ndarray:
    import skimage.data

    a = getattr(skimage.data, name)()
    return a[..., :3] if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)


#: added to the detail layer so it fits uint8; subtracted again when it is added to a photo
_DETAIL_OFFSET = 64


def _texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """The detail layer, tiled natural textures plus fine grain, as uint8 around
    :data:`_DETAIL_OFFSET` (adding it is then one saturating uint8 operation in C)."""
    import skimage.data

    tiles = []
    for name in TEXTURES:
        t = getattr(skimage.data, name)().astype(np.float32)
        tiles.append((t - t.mean()) / (t.std() + 1e-6))
    side = min(t.shape[0] for t in tiles)
    mix = sum(t[:side, :side] for t in tiles) / len(tiles)
    grain = rng.standard_normal((side, side)).astype(np.float32) * 0.5
    tile = (np.clip((mix + grain) * 9.0, -40, 40) + _DETAIL_OFFSET).astype(np.uint8)
    reps = (-(-height // side) + 1, -(-width // side) + 1)
    return np.tile(tile, reps)[:height, :width]


class _Detail:
    """The detail layer cut to each image size once (an RGB image per size, phases differ)."""

    def __init__(self, layer: np.ndarray, rng: np.random.Generator) -> None:
        self.layer, self.rng, self.cut = layer, rng, {}

    def __call__(self, width: int, height: int) -> Any:
        from PIL import Image

        if (width, height) not in self.cut:
            oy, ox = int(self.rng.integers(0, 64)), int(self.rng.integers(0, 64))
            grey = Image.fromarray(self.layer[oy : oy + height, ox : ox + width])
            self.cut[width, height] = grey.convert("RGB")
        return self.cut[width, height]


def _camera_image(
    base: np.ndarray, size: tuple[int, int], tint: np.ndarray, detail: _Detail,
    rng: np.random.Generator,
) -> Any:  # fmt: skip
    """One photo: a random window of ``base`` at camera ``size`` with tint and detail."""
    from PIL import Image, ImageChops

    h, w = base.shape[:2]
    width, height = size
    frac = rng.uniform(0.6, 0.95)
    ch = int(h * frac)
    cw = min(w, int(ch * width / height))
    ch = min(h, int(cw * height / width))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    window = base[top : top + ch, left : left + cw]
    if rng.random() < 0.5:
        window = window[:, ::-1]
    gain = tint * rng.uniform(0.85, 1.15)
    small = np.clip(window.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    big = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    return ImageChops.add(big, detail(width, height), 1.0, -_DETAIL_OFFSET)


def make_photo_folder(
    root: str | os.PathLike,
    *,
    classes: int = 3,
    per_class: int = 10,
    sizes: tuple[tuple[int, int], ...] = CAMERA_SIZES,
    png_every: int = 5,
    png_size: tuple[int, int] = (1600, 1200),
    rotated: int = 1,
    corrupt: int = 2,
    nested: bool = True,
    csv: bool = True,
    quality: int = 90,
    seed: int = 0,
) -> PhotoFolder:
    """Write an ImageFolder tree of camera-size photos under ``root``; return what was written.

    ``root/<class>/<name>.jpg`` at the camera ``sizes`` (cycled), every ``png_every``-th image
    a PNG of ``png_size`` instead (a screenshot or an export; ``0``: no PNGs), ``rotated``
    JPEGs stored sideways with an EXIF orientation tag, a ``nested`` sub-folder holding each
    class's last two images, ``corrupt`` undecodable files with image extensions (a truncated
    JPEG, a ``.png`` of random bytes, an empty ``.jpg``...), a ``notes.txt`` and a
    ``.DS_Store``-style hidden file, and with ``csv=True`` ``root/manifest.csv`` listing every
    readable image (columns ``path`` relative to ``root``, ``label`` the class name, ``value`` a
    float that grows with the image's brightness: a regression target). ~30 photos take a few
    seconds; the same ``seed`` writes the same files.
    """
    from PIL import Image

    if not 1 <= classes <= len(BASE_PHOTOS):
        raise ValueError(f"classes must be 1..{len(BASE_PHOTOS)}, got {classes}.")
    if per_class < 1 or not sizes:
        raise ValueError("per_class must be >= 1 and sizes non-empty.")
    rng = np.random.default_rng(seed)
    top = Path(root)
    top.mkdir(parents=True, exist_ok=True)
    biggest = (max(s[0] for s in (*sizes, png_size)), max(s[1] for s in (*sizes, png_size)))
    detail = _Detail(_texture(biggest[0] + 64, biggest[1] + 64, rng), rng)
    names = [BASE_PHOTOS[k] for k in range(classes)]
    tints = rng.uniform(0.7, 1.3, size=(classes, 3)).astype(np.float32)
    out = PhotoFolder(top, names, [], [], [], [], [], [], [], [], [], None)
    count = 0
    for k, name in enumerate(names):
        base = _base(name)
        (top / name).mkdir(exist_ok=True)
        for j in range(per_class):
            png = png_every > 0 and count % png_every == png_every - 1
            size = png_size if png else sizes[count % len(sizes)]
            im = _camera_image(base, size, tints[k], detail, rng)
            sub = f"{name}/more" if nested and j >= per_class - 2 else name
            (top / sub).mkdir(exist_ok=True)
            rel = f"{sub}/{name}_{j:03d}.{'png' if png else 'jpg'}"
            shown = size
            if png:
                im.save(top / rel, format="PNG", compress_level=1)
                out.pngs.append(rel)
            elif len(out.rotated) < rotated and j % 3 == 1:
                exif = Image.Exif()
                exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
                im.transpose(Image.Transpose.ROTATE_90).save(
                    top / rel, format="JPEG", quality=quality, exif=exif
                )
                out.rotated.append(rel)
                out.jpegs.append(rel)
            else:
                im.save(top / rel, format="JPEG", quality=quality)
                out.jpegs.append(rel)
            out.images.append(rel)
            out.labels.append(k)
            out.values.append(round(float(np.asarray(im.reduce(16)).mean()) / 255.0, 5))
            out.sizes[rel] = shown
            if sub != name:
                out.nested.append(rel)
            count += 1
    _write_broken(top, names, corrupt, rng, out)
    if csv:
        out.csv = top / "manifest.csv"
        with open(out.csv, "w", newline="") as f:
            writer = _csv.writer(f)
            writer.writerow(out.csv_columns)
            for rel, k, v in zip(out.images, out.labels, out.values):
                writer.writerow([rel, names[k], f"{v:.5f}"])
    return out


def _write_broken(
    top: Path, names: list[str], corrupt: int, rng: np.random.Generator, out: PhotoFolder
) -> None:
    """Undecodable files with image extensions, and files a listing must skip."""
    good_jpeg = next((p for p in out.jpegs if p not in out.rotated), None)
    for c in range(corrupt):
        cls = names[c % len(names)]
        kind = c % 3
        if kind == 0 and good_jpeg is not None:  # an interrupted copy
            data = (top / good_jpeg).read_bytes()
            rel = f"{cls}/truncated_{c}.jpg"
            (top / rel).write_bytes(data[: max(len(data) // 50, 200)])
        elif kind == 1:  # not an image at all
            rel = f"{cls}/random_{c}.png"
            (top / rel).write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        else:
            rel = f"{cls}/empty_{c}.jpg"
            (top / rel).write_bytes(b"")
        out.corrupt.append(rel)
    notes = f"{names[0]}/notes.txt"
    (top / notes).write_text("shot on a phone, sorted by hand\n")
    (top / names[-1] / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    out.non_images.append(notes)
