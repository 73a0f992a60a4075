"""Per-sample photo pipelines, the augment="auto" choice, and checks of a user's own pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tlkit.datasets import (
    DataError,
    colour_augment,
    from_arrays,
    from_folder,
    load,
    strong_augment,
    transforms,
)


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            arr = rng.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    return from_folder(tmp_path)


def test_photo_pipelines_make_float_squares_at_the_training_size(photos):
    x = photos.dataset()[0][0]  # uint8 (3, 60, 80)
    for t in (transforms.train_transform(32), transforms.strong_transform(32),
              transforms.strong_transform(32, policy="randaugment"), transforms.eval_transform(32)):  # fmt: skip
        y = t(x)
        assert y.shape == (3, 32, 32) and y.dtype == torch.float32
        assert 0 <= float(y.min()) and float(y.max()) <= 1
    ev = transforms.eval_transform(32)
    assert torch.equal(ev(x), ev(x))  # deterministic
    # the eval view is the centre: resize short side to 32/0.875 = 37, crop the middle 32
    ref = torch.nn.functional.interpolate(x[None].float(), size=(37, 49), mode="bilinear",
                                          antialias=True, align_corners=False)[0]  # fmt: skip
    ref = ref[:, 2:34, 8:40] / 255
    assert (ev(x) - ref).abs().mean() < 0.02
    torch.manual_seed(0)
    flipped = [transforms.train_transform(60, scale=(1, 1))(x[:, :, :60]) for _ in range(16)]
    plain = x[:, :, :60].float() / 255
    n_flip = sum(torch.allclose(f, plain.flip(-1), atol=1 / 255) for f in flipped)
    n_same = sum(torch.allclose(f, plain, atol=1 / 255) for f in flipped)
    assert n_flip > 0 and n_same > 0 and n_flip + n_same == 16  # flip or not, nothing else


def test_auto_augment_chooses_by_the_data(photos):
    assert transforms.auto_augment(load("digits").source) == "digits"  # 8x8 grey
    assert transforms.auto_augment(load("digits-m").source) == "digits"  # 32x32 colour digits
    big = from_arrays(np.zeros((2, 96, 96, 3), dtype=np.uint8), [0, 1])
    assert transforms.auto_augment(big) == "photos"
    assert transforms.auto_augment(photos) == "photos"
    p = transforms.pipelines(photos, 48)
    assert p.kind == "photos" and p.batch_weak is None
    assert "RandomResizedCrop" in repr(p.train) and "TrivialAugmentWide" in repr(p.strong)
    assert "CenterCrop" in repr(p.eval)
    digits = transforms.pipelines(load("digits").source)
    assert (
        digits.kind == "digits" and digits.train is None and digits.batch_strong is strong_augment
    )
    assert transforms.pipelines(photos, 48, augment=False).train is not None  # eval view only
    assert "Random" not in repr(transforms.pipelines(photos, 48, augment=False).train)
    mine = transforms.train_transform(40)
    assert transforms.pipelines(photos, 48, augment=mine).train is mine
    with pytest.raises(DataError, match="augment must be"):
        transforms.pipelines(photos, augment="heavy")
    colour = transforms.pipelines(load("digits").source, augment="colour")
    assert colour.kind == "colour" and colour.batch_weak is colour_augment
    files = transforms.pipelines(photos, 48, augment="colour")  # files: squashed, batch views
    assert files.batch_weak is colour_augment and "CenterCrop" not in repr(files.eval)


def test_views_and_check_transform(photos):
    from torchvision.transforms import v2

    views = transforms.Views(transforms.train_transform(24), transforms.strong_transform(24))
    (weak, strong) = transforms.check_transform(photos, views)
    assert weak.shape == strong.shape == (2, 3, 24, 24)
    with pytest.raises(DataError, match=r"uint8 images.*ToDtype\(torch.float32, scale=True\)"):
        transforms.check_transform(photos, v2.Resize((24, 24)))
    normalised = v2.Compose([transforms.eval_transform(24), v2.Normalize([0.5] * 3, [0.1] * 3)])
    with pytest.raises(DataError, match="remove v2.Normalize"):
        transforms.check_transform(photos, normalised)
    with pytest.raises(DataError, match="drop ToTensor"):
        transforms.check_transform(photos, v2.Compose([v2.ToImage(), lambda im: im.convert("L")]))
    with pytest.raises(DataError, match="different shapes.*eval_transform"):
        transforms.check_transform(photos, v2.ToDtype(torch.float32, scale=True), n=6)
    with pytest.raises(DataError, match="between 1 and 4096"):
        transforms.train_transform(0)
