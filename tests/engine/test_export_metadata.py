"""The preprocessing written beside an exported model is what ``run.predict`` does: an outside
user who follows ``tlkit.json`` with plain torch and PIL gets the run's predictions, for images
given as tensors and for files."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import tlkit
from tlkit.testing import make_photo_folder


def exported(run, path):
    """The exported program and its metadata, read as a deployment would."""
    extra = {"tlkit.json": ""}
    program = torch.export.load(run.export(path), extra_files=extra)
    return program.module(), json.loads(extra["tlkit.json"])


def follow_for_arrays(images: torch.Tensor, arrays: dict) -> torch.Tensor:
    """The metadata's ``arrays`` recipe, in plain torch."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    resize = arrays["resize"]
    assert resize["mode"] == "squash"  # the whole image to the square: what predict does
    size = tuple(resize["size"])
    shrink = x.shape[-1] > size[1] or x.shape[-2] > size[0]
    antialias = {"always": True, "never": False, "when shrinking": shrink}[resize["antialias"]]
    return F.interpolate(
        x,
        size=size,
        mode=resize["interpolation"],
        align_corners=resize["align_corners"],
        antialias=antialias,
    )


#: PIL's transposes for the EXIF orientations 2-8 (what ImageOps.exif_transpose applies)
UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
           6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip


def follow_for_a_file(path, files: dict) -> torch.Tensor:
    """The metadata's ``files`` recipe, in plain PIL: decode (JPEGs at the reduced DCT scale it
    names), resize as it says, turn upright, centre-crop, divide by 255."""
    import numpy as np
    from PIL import Image

    resize = files["resize"]
    im = Image.open(path)
    orientation = im.getexif().get(0x0112, 1)
    w0, h0 = im.size  # as stored; the sizes below are symmetric, so upright gives the same
    if resize["mode"] == "crop":
        r = resize["short_side"]
        target = (r, math.floor(r * h0 / w0)) if w0 <= h0 else (math.floor(r * w0 / h0), r)
        shrink = min(w0, h0) / r
    else:
        target = (resize["size"][1], resize["size"][0])  # (width, height)
        shrink = min(w0 / target[0], h0 / target[1])
    box = (0, 0, w0, h0)
    if im.format == "JPEG":
        k = next(k for k in files["jpeg_draft_scales"] if k <= max(shrink, 1.0))
        if k > 1:
            box = im.draft(im.mode, (w0 // k, h0 // k))[1]
    im = im.convert("RGB")
    if orientation >= 5:
        target = target[::-1]
    im = im.resize(target, Image.Resampling.BILINEAR, box=box)
    if orientation in UPRIGHT:
        im = im.transpose(getattr(Image.Transpose, UPRIGHT[orientation]))
    if resize["mode"] == "crop":
        c = resize["crop"]
        w, h = im.size
        left, top = int(round((w - c) / 2.0)), int(round((h - c) / 2.0))
        im = im.crop((left, top, left + c, top + c))
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    return x.float() / 255


def test_in_memory_digits_export_the_squash_predict_does(tmp_path):
    task = tlkit.datasets.load("digits")
    run = tlkit.fit(task, backbone="small_cnn", epochs=1, image_size=16, progress=False, seed=0)
    program, info = exported(run, tmp_path / "digits.pt2")
    images = task.source_test.inputs
    arrays = info["input"]["arrays"]
    assert arrays["resize"]["size"] == [16, 16] and "16x16" in info["input"]["preprocess"]
    x = follow_for_arrays(images, arrays)
    assert list(x.shape[1:]) == info["input"]["shape"][1:]
    with torch.no_grad():
        got = program(x)
    assert torch.equal(got.argmax(1), run.predict(images))
    assert torch.allclose(got, run.predict_outputs(images), atol=1e-5)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A small camera-like folder: JPEGs (one stored sideways with an EXIF tag) and PNGs."""
    return make_photo_folder(
        tmp_path_factory.mktemp("photos"),
        classes=3,
        per_class=6,
        sizes=((320, 240), (240, 320), (300, 200)),
        png_size=(160, 120),
        corrupt=0,
        csv=False,
    )


@pytest.mark.parametrize("augment", ["auto", "digits"])  # crop (photos) or squash (digit files)
def test_file_runs_export_the_preprocessing_predict_does(photos, tmp_path, augment):
    data = tlkit.datasets.from_folder(photos.root)
    run = tlkit.fit(data, backbone="small_cnn", epochs=1, image_size=24, batch_size=8,
                    augment=augment, num_workers=0, progress=False, seed=0)  # fmt: skip
    program, info = exported(run, tmp_path / "photos.pt2")
    files = info["input"]["files"]
    assert files["resize"]["mode"] == ("crop" if augment == "auto" else "squash")
    table = run.predict(photos.root, progress=False)
    paths = [photos.root / p for p in table["path"]]
    x = torch.stack([follow_for_a_file(p, files) for p in paths])
    assert list(x.shape[1:]) == info["input"]["shape"][1:]
    with torch.no_grad():
        got = program(x)
    assert got.argmax(1).tolist() == table["class_id"].tolist()
    expected = run.predict_outputs(tlkit.datasets.from_paths([str(p) for p in paths]))
    assert (got - expected).abs().max() < 0.01  # PIL and torchvision resize: +-1 grey level
