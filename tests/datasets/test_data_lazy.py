"""Lazy file-backed domains: folders, CSV manifests, path lists, torchvision datasets; decoding,
skipping corrupt files, seeded per-sample augmentation, streaming per rank and worker."""

from __future__ import annotations

import io
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tlkit.datasets import (
    UNLABELLED,
    DataError,
    DataWarning,
    Domain,
    DomainPair,
    KeySampler,
    add_label_noise,
    backing,
    collate,
    few_labels,
    from_csv,
    from_folder,
    from_paths,
    from_torchvision,
    transforms,
)
from tlkit.datasets.decode import decode_bytes, decode_file


def _photo(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    """3 classes x 6 JPEG/PNG photos of varying sizes."""
    root = tmp_path / "photos"
    for c, cls in enumerate(["cat", "dog", "fox"]):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            ext = "jpg" if i % 2 else "png"
            _photo(10 * c + i, (30 + 3 * i, 24 + i)).save(root / cls / f"{i}.{ext}")
    return root


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any image is decoded."""

    def boom(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(backing, "decode_file", boom)
    monkeypatch.setattr(backing, "decode_bytes", boom)


# -- lazy construction and label operations --------------------------------------------------
def test_folder_is_lazy_and_label_operations_decode_nothing(folder, no_decoding):
    d = from_folder(folder, image_size=32)
    assert not d.in_memory and d.modality == "image" and d.image_size == 32
    assert d.classes == ("cat", "dog", "fox") and len(d) == 18
    assert torch.bincount(d.labels).tolist() == [6, 6, 6]
    assert d.paths[0].endswith("cat/0.png") and all(p.startswith(str(folder)) for p in d.paths)
    train, test = d.split(0.5, seed=0)
    assert len(train) + len(test) == 18 and set(train.paths).isdisjoint(test.paths)
    few = few_labels(DomainPair(train, test), 2)
    assert len(few.source) == 6 and few.target.num_labelled == 0
    assert not few.target.in_memory and set(few.target.paths) <= set(train.paths)
    noisy = add_label_noise(d, "symmetric", 0.5, seed=1)
    assert noisy.noise_rate > 0.2 and torch.equal(noisy.clean_labels, d.clean_labels)
    assert noisy.paths == d.paths
    sub = d.subset([17, 0])
    assert sub.paths == [d.paths[17], d.paths[0]] and sub.labels.tolist() == [2, 0]
    assert "decoded lazily" in repr(d)
    with pytest.raises(DataError, match=r"d\.dataset\(transform\).*d\.materialize"):
        _ = d.images
    with pytest.raises(DataError, match="no in-memory tensor"):
        _ = d.inputs


def test_unreadable_files_only_matter_when_read(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.jpg").write_bytes(b"not a jpeg at all")
    d = from_folder(tmp_path, check="none")  # listing + labels: no file is opened
    train, test = d.split(0.34)
    assert len(train) == 4 and len(test) == 2
    with pytest.raises(DataError, match=r"none of the 6 checked files.*0\.jpg"):
        from_folder(tmp_path)  # the default probe reads headers and says so


def test_unlabelled_folder_takes_the_source_classes(folder, tmp_path):
    field = tmp_path / "field" / "deep"
    field.mkdir(parents=True)
    for i in range(4):
        _photo(100 + i).save(field / f"{i}.jpg")
    target = from_folder(tmp_path / "field", labels=False)
    assert len(target) == 4 and target.num_labelled == 0 and not target.has_clean_labels
    src = from_folder(folder)
    pair = DomainPair(src, target=target)
    assert pair.target.classes == src.classes and pair.target.num_classes == 3


def test_from_csv_and_dataframe(folder, tmp_path):
    pd = pytest.importorskip("pandas")
    d = from_folder(folder)
    rel = [p[len(str(folder)) + 1 :] for p in d.paths]
    names = [d.classes[y] for y in d.labels.tolist()]
    names[3] = ""  # an empty cell: unlabelled
    csv = folder / "manifest.csv"
    csv.write_text("file,species\n" + "\n".join(f"{p},{n}" for p, n in zip(rel, names)) + "\n")
    with pytest.warns(DataWarning, match="1 of 18 samples have no label"):
        c = from_csv(csv, path_column="file", label_column="species")
    assert c.classes == ("cat", "dog", "fox") and c.paths == d.paths and c.name == "manifest"
    assert c.labels[3] == UNLABELLED and c.labels[4] == d.labels[4]
    df = pd.DataFrame({"path": d.paths, "label": d.labels.tolist()})
    f = from_csv(df, classes=["cat", "dog", "fox"])
    assert torch.equal(f.labels, d.labels)
    with pytest.raises(DataError, match=r"no column 'path'.*\['file', 'species'\]"):
        from_csv(csv)
    csv.write_text("file,species\nmissing.jpg,cat\n" + f"{rel[0]},dog\n")
    with pytest.raises(DataError, match=r"1 of 2 files do not exist.*missing\.jpg.*root="):
        from_csv(csv, path_column="file", label_column="species")


def test_from_paths_with_numeric_and_named_labels(folder):
    d = from_folder(folder)
    p = from_paths(d.paths[:6], ["10", "2", "2", "10", "2", "10"])
    assert p.classes == ("2", "10")  # numeric order, not "10" < "2"
    assert p.labels.tolist() == [1, 0, 0, 1, 0, 1]
    q = from_paths(d.paths, labels=None, classes=d.classes)
    assert q.num_labelled == 0 and q.num_classes == 3
    with pytest.raises(DataError, match="6 paths but 2 labels"):
        from_paths(d.paths[:6], [0, 1])
    with pytest.raises(DataError, match="no paths"):
        from_paths([])


def test_materialize_and_eager_from_folder(folder):
    d = from_folder(folder)
    m = d.materialize(16, progress=False)
    assert m.in_memory and m.images.shape == (18, 3, 16, 16) and torch.equal(m.labels, d.labels)
    eager = from_folder(folder, image_size=16, in_memory=True, progress=False)
    assert torch.equal(eager.images, m.images)
    crop = d.materialize(16, resize="crop", progress=False)
    assert crop.images.shape == (18, 3, 16, 16) and not torch.equal(crop.images, m.images)
    with pytest.raises(DataError, match="needs image_size"):
        d.materialize()


# -- decoding -------------------------------------------------------------------------------
def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    x = decode_bytes(_encode(im, "JPEG", exif=exif, quality=95))
    assert x.shape == (3, 40, 20)  # portrait now
    assert x[2, :5].float().mean() > 200  # blue ends up on top
    assert x[0, -5:].float().mean() > 200


def test_palette_alpha_cmyk_gray_and_other_formats(tmp_path):
    pal = Image.new("P", (8, 8))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.paste(1, (0, 0, 4, 8))
    pal.paste(2, (4, 0, 8, 8))
    x = decode_bytes(_encode(pal, "PNG"))
    assert x[:, 0, 0].tolist() == [255, 0, 0] and x[:, 0, 7].tolist() == [0, 255, 0]
    pal.info["transparency"] = 2  # green is transparent: white
    x = decode_bytes(_encode(pal, "PNG", transparency=2))
    assert x[:, 0, 7].tolist() == [255, 255, 255] and x[:, 0, 0].tolist() == [255, 0, 0]
    rgba = Image.new("RGBA", (6, 6), (0, 0, 0, 0))  # fully transparent black
    rgba.paste((10, 20, 30, 255), (0, 0, 3, 6))
    x = decode_bytes(_encode(rgba, "PNG"))
    assert x[:, 0, 0].tolist() == [10, 20, 30] and x[:, 0, 5].tolist() == [255, 255, 255]
    half = decode_bytes(_encode(Image.new("LA", (4, 4), (0, 128)), "PNG"))
    assert abs(int(half[0, 0, 0]) - 127) <= 1  # black at 50% over white
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    x = decode_bytes(_encode(cmyk, "JPEG", quality=95))
    assert x.shape == (3, 8, 8) and x[0].float().mean() > 200 and x[1].float().mean() < 60
    gray = decode_bytes(_encode(Image.new("L", (5, 7), 77), "JPEG", quality=100))
    assert gray.shape == (3, 7, 5) and (gray.int() - 77).abs().max() <= 1
    for fmt in ("BMP", "TIFF", "WEBP", "PPM"):
        path = tmp_path / f"x.{fmt.lower()}"
        Image.new("RGB", (6, 4), (1, 2, 3)).save(
            path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {})
        )
        x = decode_file(path)
        assert x.shape == (3, 4, 6) and x.dtype == torch.uint8, fmt
        assert x[:, 0, 0].tolist() == [1, 2, 3], fmt


# -- skipping and strictness -----------------------------------------------------------------
def _corrupt(folder):
    good = (folder / "dog" / "1.jpg").read_bytes()
    (folder / "dog" / "1.jpg").write_bytes(good[:200])  # truncated JPEG
    (folder / "fox" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def test_corrupt_files_are_skipped_once_with_a_warning_and_counted(folder):
    _corrupt(folder)
    d = from_folder(folder, check="none")
    bad = [
        d.paths.index(str(folder / "dog" / "1.jpg")),
        d.paths.index(str(folder / "fox" / "2.png")),
    ]
    ds = d.dataset(transforms.eval_transform(16))
    with pytest.warns(DataWarning, match=r"skipping unreadable file '.*dog/1\.jpg'"):
        assert ds[bad[0]] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds[bad[0]] is None  # one warning per file, not per read
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seen = torch.cat([idx for _, idx in loader])
    assert len(seen) == 16 and not set(seen.tolist()) & set(bad)
    assert ds.num_skipped == 2  # counted in the worker processes, visible here
    assert sorted(ds.skipped) == sorted(bad)
    assert {p.rsplit("/", 2)[-2] for p in ds.skipped_paths()} == {"dog", "fox"}
    strict = d.dataset(strict=True)
    with pytest.raises(DataError, match=r"dog/1\.jpg.*strict=True"):
        strict[bad[0]]
    assert strict[0][0].dtype == torch.uint8  # readable files still read


def test_collate_drops_none_stacks_views_and_explains_sizes():
    a, b = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    x, idx = collate([(a, 5), None, (b, 7)])
    assert x.shape == (2, 3, 4, 4) and idx.tolist() == [5, 7] and idx.dtype == torch.long
    (w, s), idx = collate([((a, b), 1), ((b, a), 2)])
    assert torch.equal(w[1], b) and torch.equal(s[1], a)
    x, idx = collate([None, None])
    assert x is None and len(idx) == 0
    with pytest.raises(DataError, match="different shapes.*eval_transform"):
        collate([(torch.zeros(3, 4, 4), 0), (torch.zeros(3, 5, 4), 1)])


# -- seeded augmentation and order -------------------------------------------------------------
def _run(ds, sampler, workers):
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate
    )
    xs, ids = zip(*loader)
    return torch.cat(xs), torch.cat(ids)


def test_seeded_augmentation_is_a_function_of_index_and_seed(folder):
    d = from_folder(folder)
    ds = d.dataset(transforms.train_transform(16))
    assert pickle.loads(pickle.dumps(ds))[(3, 9)][0].shape == (3, 16, 16)
    order = d.epoch_order(seed=0, epoch=1)
    assert torch.equal(order, d.epoch_order(0, 1)) and not torch.equal(order, d.epoch_order(0, 2))
    x0, i0 = _run(ds, KeySampler(order, seed=123), 0)
    x2, i2 = _run(ds, KeySampler(order, seed=123), 2)
    assert torch.equal(i0, order) and torch.equal(i2, order)
    assert torch.equal(x0, x2)  # same augmentation whatever the worker count
    x_other, _ = _run(ds, KeySampler(order, seed=124), 0)
    assert not torch.equal(x0, x_other)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    ds[(0, 5)]
    assert torch.equal(torch.rand(1), before)  # the caller's generator is untouched
    views = d.dataset(
        transforms.Views(transforms.train_transform(16), transforms.strong_transform(16))
    )
    (weak, strong), _ = collate([views[(1, 3)], views[(2, 3)]])
    assert weak.shape == strong.shape == (2, 3, 16, 16) and not torch.equal(weak, strong)


def test_stream_ranks_workers_and_skip(folder, no_decoding):
    d = from_folder(folder).subset(range(17))  # 17 samples: uneven across 2 ranks
    streams = [d.stream(seed=3, epoch=1, rank=r, world_size=2, batch_size=3) for r in (0, 1)]
    r0, r1 = (s.rank_indices() for s in streams)
    assert len(r0) == len(r1) == 9  # padded by wrapping, like DistributedSampler
    assert set(r0.tolist()) | set(r1.tolist()) == set(range(17))
    assert np.array_equal(np.concatenate([r0, r1])[:17], d.epoch_order(3, 1).numpy())
    skipped = d.stream(seed=3, epoch=1, rank=0, world_size=2, batch_size=3, skip=6)
    assert np.array_equal(skipped.rank_indices(), r0[6:])  # computed, nothing read
    with pytest.raises(DataError, match="rank 2 is not below world_size 2"):
        d.stream(rank=2, world_size=2)


def test_stream_order_is_the_same_for_any_worker_count(folder):
    d = from_folder(folder)
    t = transforms.train_transform(8)

    def batches(workers):
        s = d.stream(t, seed=1, epoch=0, batch_size=4, skip=2)
        loader = torch.utils.data.DataLoader(
            s, batch_size=4, num_workers=workers, collate_fn=collate
        )
        return [(x, i) for x, i in loader]

    zero, two = batches(0), batches(2)
    assert [i.tolist() for _, i in zero] == [i.tolist() for _, i in two]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(zero, two))
    assert torch.cat([i for _, i in zero]).tolist() == d.epoch_order(1, 0).tolist()[2:]


# -- torchvision ------------------------------------------------------------------------------
def test_torchvision_dataset_object_is_wrapped_lazily(no_decoding):
    from torchvision.datasets import FakeData

    fake = FakeData(size=12, image_size=(3, 20, 16), num_classes=3, random_offset=0)
    d = from_torchvision(fake)
    assert not d.in_memory and len(d) == 12 and d.num_classes == 3
    assert d.labels.tolist() == [int(fake[i][1]) for i in range(12)]
    x, i = d.dataset()[4]
    assert i == 4 and x.shape == (3, 20, 16) and x.dtype == torch.uint8
    eager = from_torchvision(fake, in_memory=True)
    assert eager.in_memory and torch.equal(eager.images[4], x)


def test_domain_getitem_still_gives_float_and_label(folder):
    d = from_folder(folder)
    x, y = d[7]
    assert x.is_floating_point() and 0 <= x.min() and x.max() <= 1 and int(y) == d.labels[7]
    arrays = Domain(torch.full((2, 1, 3, 3), 255, dtype=torch.uint8), torch.tensor([0, 1]))
    assert arrays[1][0].max() == 1.0
