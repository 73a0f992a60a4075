"""Camera photos are decoded at the size training needs (JPEG DCT scaling), and that changes
neither what the model sees (within about a grey level), nor the crop statistics, nor its
predictions. Built on :func:`tlkit.testing.make_photo_folder` (camera-size JPEGs and PNGs)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import tlkit
from tlkit.datasets import DataError, DomainPair, from_csv, from_folder
from tlkit.datasets import transforms as T
from tlkit.datasets.decode import DecodeError, EncodedImage, decode_file
from tlkit.datasets.loader import seeded_call
from tlkit.testing import make_photo_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("photos"), classes=3, per_class=10, seed=0)


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference per pixel, in grey levels (of 255)."""
    return float((a.float() - b.float()).abs().mean()) * (255.0 if a.is_floating_point() else 1)


# -- the fixture ------------------------------------------------------------------------------
def test_the_photo_fixture_is_a_folder_people_bring(photos):
    assert len(photos.images) == 30 and photos.pngs and photos.rotated and photos.nested
    assert len(photos.corrupt) == 2 and photos.non_images
    big = [p for p in photos.jpegs if photos.sizes[p] == (4000, 3000)]
    assert big and all(photos.sizes[p][0] * photos.sizes[p][1] >= 1_500_000 for p in photos.jpegs)
    rotated = photos.rotated[0]
    assert EncodedImage.from_file(photos.path(rotated)).size == photos.sizes[rotated]
    x = decode_file(photos.path(rotated))
    assert tuple(x.shape[1:]) == photos.sizes[rotated][::-1]  # upright: (3, H, W)
    for bad in photos.corrupt:
        with pytest.raises(DecodeError):
            decode_file(photos.path(bad))
    with pytest.warns(UserWarning, match="cannot be decoded"):
        d = from_folder(photos.root, check="all", progress=False)
    assert d.classes == tuple(photos.classes) and len(d) == 30 + len(photos.corrupt)
    assert not any(p.endswith(".txt") for p in d.paths)
    assert all(any(p.endswith(n) for p in d.paths) for n in photos.nested)
    with open(photos.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(photos.csv_columns) and len(rows) == 30
    assert len({r["value"] for r in rows}) > 20 and all(0 < float(r["value"]) < 1 for r in rows)
    table = from_csv(photos.csv, progress=False)
    assert table.classes == tuple(photos.classes) and table.labels.tolist() == photos.labels
    again = make_photo_folder(photos.root.parent / "again", classes=3, per_class=1, seed=0)
    assert again.path(again.images[0]).read_bytes() == photos.path(photos.images[0]).read_bytes()


# -- closeness to full decoding ---------------------------------------------------------------
def test_reduced_decoding_is_within_3_grey_levels_of_full_decoding(photos, monkeypatch):
    """Every camera JPEG, training crops (two seeds) and the evaluation view at 224 px: the
    reduced decode against full decoding followed by the same antialiased resize."""
    train, evaluate = T.train_transform(224), T.eval_transform(224)
    worst, scales = 0.0, set()
    real_resized = EncodedImage.resized

    def spy(self, box, out, scale):
        scales.add(scale)
        return real_resized(self, box, out, scale)

    monkeypatch.setattr(EncodedImage, "resized", spy)
    for rel in photos.jpegs:
        full = decode_file(photos.path(rel))
        for t, seed in ((train, 0), (train, 1), (evaluate, 0)):
            reduced = seeded_call(t, EncodedImage.from_file(photos.path(rel)), seed)
            plain = seeded_call(t, full, seed)
            assert reduced.shape == plain.shape == (3, 224, 224)
            worst = max(worst, mad(reduced, plain))
    assert worst <= 3.0, worst
    assert 8 in scales and 4 in scales  # the camera sizes did decode at 1/8 and 1/4


def test_a_full_size_decode_is_never_made_for_a_camera_jpeg(photos, monkeypatch, tmp_path):
    """Files and WebDataset shards alike: every photo pipeline decodes at reduced size."""
    from tlkit.datasets import from_shards, pack

    def boom(self):
        raise AssertionError("decoded at full size")

    rel = next(p for p in photos.jpegs if photos.sizes[p] == (4000, 3000))
    d = from_csv(photos.csv, progress=False).subset(torch.tensor([photos.images.index(rel)]))
    shards = from_shards(pack(d, tmp_path / "shards", progress=False))
    monkeypatch.setattr(EncodedImage, "decode", boom)
    for t in (T.train_transform(224), T.strong_transform(224), T.eval_transform(224),
              T.squash_transform(64), T.Views(T.train_transform(96), T.strong_transform(96))):  # fmt: skip
        for domain in (d, shards):
            x, _ = domain.dataset(t, strict=True)[(0, 5)]
            views = x if isinstance(x, tuple) else (x,)
            assert all(v.shape[0] == 3 and v.is_floating_point() for v in views)
    for resize in ("squash", "crop"):  # in_memory=True / materialize() too
        m = d.materialize(48, resize=resize, progress=False)
        assert m.inputs.shape == (1, 3, 48, 48) and m.inputs.dtype == torch.uint8


def test_png_and_small_crops_keep_the_full_path(photos):
    png = photos.path(photos.pngs[0])
    train = T.train_transform(224)
    for seed in range(3):
        a = seeded_call(train, EncodedImage.from_file(png), seed)
        assert torch.equal(a, seeded_call(train, decode_file(png), seed))
    jpeg = photos.path(photos.jpegs[0])
    large = T.eval_transform(1400)  # the short side needs 1600 px: no DCT scale covers it
    assert torch.equal(large(EncodedImage.from_file(jpeg)), large(decode_file(jpeg)))


def test_exif_rotated_photo_is_upright_at_every_scale(photos):
    rel = photos.rotated[0]
    full = decode_file(photos.path(rel))
    for size in (64, 224, 700):  # scales 8, 4 (or 2) and 1
        t = T.eval_transform(size)
        assert mad(t(EncodedImage.from_file(photos.path(rel))), t(full)) <= 3.0


# -- crop statistics --------------------------------------------------------------------------
def test_crop_statistics_are_randomresizedcrop_on_the_full_size_image(photos, monkeypatch):
    """The crop is drawn on the full-size (upright) geometry: its area fraction and aspect
    ratio are distributed as torchvision's reference sampler draws them on a 4000x3000 image,
    the boxes reach the full image's edges, and, seed for seed, the box is the one the plain
    tensor pipeline crops."""
    from scipy.stats import ks_2samp
    from torchvision import transforms as v1

    boxes = []

    def record(self, box, out, scale):
        boxes.append(box)
        return torch.zeros((3, out[1], out[0]), dtype=torch.uint8)

    monkeypatch.setattr(EncodedImage, "resized", record)
    rel = next(p for p in photos.jpegs if photos.sizes[p] == (4000, 3000))
    image = EncodedImage.from_file(photos.path(rel))
    t = T.train_transform(224)
    n = 800
    for seed in range(n):
        seeded_call(t, image, seed)
    b = np.array(boxes, dtype=np.float64)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    # the reference: torchvision's (v1) sampler on a full-size canvas, independent draws
    canvas = torch.empty((), dtype=torch.uint8).expand(3, 3000, 4000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        ref = np.array([v1.RandomResizedCrop.get_params(canvas, list(T.TRAIN_SCALE), [3 / 4, 4 / 3])
                        for _ in range(n)], dtype=np.float64)  # fmt: skip
    ref_area, area = ref[:, 2] * ref[:, 3] / 12e6, w * h / 12e6
    assert ks_2samp(area, ref_area).pvalue > 0.01
    assert ks_2samp(np.log(w / h), np.log(ref[:, 3] / ref[:, 2])).pvalue > 0.01
    lo, hi = T.TRAIN_SCALE
    assert area.min() >= lo - 0.01 and area.max() <= hi + 0.01 and area.max() > 0.9
    assert b[:, 2].max() > 3900 and b[:, 3].max() > 2900  # full-size coordinates, not 1/8
    # seed for seed, the tensor pipeline's RandomResizedCrop draws the same box
    for seed in range(20):
        p = seeded_call(lambda x: t.head.make_params([x]), canvas, seed)
        assert boxes[seed] == (p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"])
    assert t.pipeline.transforms[0] is t.head


# -- predictions ------------------------------------------------------------------------------
def test_a_trained_model_predicts_the_same_with_either_decoding(photos):
    """Trained, not random: ``small_cnn`` fitted for a few epochs at 32 px on the fixture (the
    reduced path, the default), then every photo is predicted through the evaluation view
    decoded both ways; at least 99% of the predictions agree (here: all 30)."""
    d = from_csv(photos.csv, progress=False)
    train, test = d.split(0.3, seed=0)
    run = tlkit.fit(DomainPair(train, test, name="photos"), backbone="small_cnn", image_size=32,
                    batch_size=8, lr=3e-3, epochs=6, mode="full", progress=False, seed=0)  # fmt: skip
    t = T.eval_transform(32)
    reduced = torch.stack([t(EncodedImage.from_file(photos.path(p))) for p in photos.images])
    plain = torch.stack([t(decode_file(photos.path(p))) for p in photos.images])
    run.model.eval()
    with torch.no_grad():
        a, b = run.model(reduced).argmax(1), run.model(plain).argmax(1)
    truth = torch.tensor(photos.labels)
    assert (b == truth).float().mean() > 0.6, "the model must have learned something"
    assert (a == b).float().mean() >= 0.99, (a, b)


def test_encoded_image_reports_bad_files_clearly(photos, tmp_path):
    for rel in photos.corrupt:
        with pytest.raises(DecodeError, match=rel.split("/")[-1]):
            t = T.train_transform(64)
            t(EncodedImage.from_file(photos.path(rel)))
    with pytest.raises(DataError, match="cannot be read"):
        EncodedImage.from_file(tmp_path / "missing.jpg")
