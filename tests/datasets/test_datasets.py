"""tlkit.datasets: bundled data + cache, pairs, few-label splits, augmentation, user sources."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tlkit import datasets
from tlkit.datasets import (
    UNLABELLED,
    DataError,
    Domain,
    DomainPair,
    bundled,
    colour_augment,
    few_labels,
    from_arrays,
    from_folder,
    from_torchvision,
    load,
    names,
    strong_augment,
    weak_augment,
)

SINGLES = ["digits", "synth-digits", "digits-m"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module, so each bundled domain is built once here."""
    return tmp_path_factory.mktemp("tlkit-cache")


# -- bundled builders ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, n, shape, per_class",
    [
        ("digits", 1797, (1, 8, 8), None),
        ("synth-digits", 3000, (1, 32, 32), 300),
        ("digits-m", 1797, (3, 32, 32), None),
    ],
)
def test_bundled_shapes_dtypes_balance(cache, name, n, shape, per_class):
    d = bundled.build(name, seed=0, cache_dir=cache)
    assert len(d) == n and d.image_shape == shape
    assert d.images.dtype == torch.uint8 and d.labels.dtype == torch.int64
    assert d.classes == tuple(str(i) for i in range(10))
    counts = torch.bincount(d.labels, minlength=10)
    if per_class:
        assert counts.tolist() == [per_class] * 10
    else:
        assert counts.min() >= 170 and counts.max() <= 185  # sklearn digits: 174..183
    assert d.images.max() >= 200  # real ink, not a blank or 0..16 image
    assert float(d.images.float().std()) > 20


def test_digits_scaled_from_sklearn(cache):
    from sklearn.datasets import load_digits

    ref = load_digits()
    d = bundled.build("digits", cache_dir=cache)
    assert torch.equal(d.labels, torch.from_numpy(ref.target))
    expected = np.round(ref.images * 255 / 16).astype(np.uint8)
    assert np.array_equal(d.images[:, 0].numpy(), expected)


def test_digits_m_is_abs_difference_of_photo_and_digit(cache, monkeypatch):
    # with one flat-colour "photo" every patch is that colour, so out = |colour - digit| exactly
    colour = np.array([10, 100, 200], dtype=np.uint8)
    monkeypatch.setattr(bundled, "_photos", lambda: [np.broadcast_to(colour, (40, 50, 3))])
    d = bundled.build_digits_m(seed=0)
    digits = bundled.build("digits", cache_dir=cache)
    up = datasets.sources._resize(digits.images, 32).int()  # bilinear 8x8 -> 32x32
    expected = (torch.from_numpy(colour).int().view(1, 3, 1, 1) - up).abs()
    assert torch.equal(d.images.int(), expected)
    assert torch.equal(d.labels, digits.labels)


def test_digits_m_uses_photo_texture(cache):
    d = bundled.build("digits-m", cache_dir=cache)
    assert (d.images[:, 0] != d.images[:, 1]).float().mean() > 0.5  # colour, not grey
    # background (no ink) pixels vary inside an image: photo patches, not flat colour
    assert d.images.float().flatten(2).std(2).mean() > 15


@pytest.mark.parametrize("name", SINGLES)
def test_builders_deterministic_for_seed(tmp_path, name):
    a = bundled.build(name, seed=3, cache_dir=tmp_path / "a")
    b = bundled.build(name, seed=3, cache_dir=tmp_path / "b")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert (tmp_path / "a" / "datasets").is_dir()
    if name != "digits":
        c = bundled.build(name, seed=4, cache_dir=tmp_path / "a")
        assert not torch.equal(a.images, c.images)


def test_cache_file_is_used_on_second_call(tmp_path, monkeypatch):
    first = bundled.build("synth-digits", seed=1, cache_dir=tmp_path)
    path = bundled.cache_path("synth-digits", 1, tmp_path)
    assert path.is_file() and path.suffix == ".npz"
    assert "synth-digits" in path.name and "seed1" in path.name
    assert not list(path.parent.glob("*.tmp"))  # the atomic write left no temp file

    def boom(seed):
        raise AssertionError("builder called although the cache exists")

    old = bundled._BUILDERS["synth-digits"]
    monkeypatch.setitem(bundled._BUILDERS, "synth-digits", bundled.Builder(old.version, boom))
    again = bundled.build("synth-digits", seed=1, cache_dir=tmp_path)
    assert torch.equal(first.images, again.images)
    pair = load("synth-digits", seed=1, cache_dir=tmp_path)
    assert len(pair.source) + len(pair.source_test) == 3000
    with pytest.raises(AssertionError, match="builder called"):  # other seed: not cached
        bundled.build("synth-digits", seed=2, cache_dir=tmp_path)


def test_cache_dir_from_env_and_corrupt_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    path = bundled.cache_path("digits", 0)
    assert path.parent == tmp_path / "datasets"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable cache"):
        d = bundled.build("digits")
    assert len(d) == 1797
    assert len(bundled.build("digits")) == 1797  # rewritten, readable now


def test_version_is_part_of_the_cache_key(tmp_path, monkeypatch):
    old = bundled._BUILDERS["digits"]
    p1 = bundled.cache_path("digits", 0, tmp_path)
    monkeypatch.setitem(bundled._BUILDERS, "digits", bundled.Builder("999", old.build))
    assert bundled.cache_path("digits", 0, tmp_path) != p1


# -- load / names -------------------------------------------------------------------------------
def test_names_lists_singles_and_named_pairs():
    n = names()
    for name in [*SINGLES, "synth-digits->digits", "digits->digits-m"]:
        assert name in n
    assert len(n) == len(set(n))


@pytest.mark.parametrize("name", SINGLES)
def test_load_single_is_a_stratified_split(cache, name):
    pair = load(name, cache_dir=cache)
    assert pair.target is None and pair.target_test is None
    full = bundled.build(name, cache_dir=cache)
    assert len(pair.source) + len(pair.source_test) == len(full)
    frac = torch.bincount(pair.source_test.labels, minlength=10) / torch.bincount(
        full.labels, minlength=10
    )
    assert torch.allclose(frac, torch.full((10,), 0.2), atol=0.01)
    assert pair.source.num_labelled == len(pair.source)


def test_load_pair_hides_target_labels_keeps_clean(cache):
    pair = load("synth-digits->digits", cache_dir=cache)
    assert isinstance(pair, DomainPair) and pair.name == "synth-digits->digits"
    assert pair.source.name == "synth-digits" and pair.target.name == "digits"
    assert pair.source.num_labelled == len(pair.source) == 2400
    assert (pair.target.labels == UNLABELLED).all()
    assert torch.bincount(pair.target.clean_labels, minlength=10).min() >= 130
    assert pair.target_test.num_labelled == len(pair.target_test) > 0
    # both domains brought to one image shape for one network
    shapes = {d.image_shape for d in (pair.source, pair.source_test, pair.target, pair.target_test)}
    assert shapes == {(1, 32, 32)}
    assert set(pair.eval_sets()) == {"source", "target"}


def test_load_pair_rgb_and_image_size(cache):
    pair = load("digits->digits-m", cache_dir=cache)
    assert pair.source.image_shape == pair.target.image_shape == (3, 32, 32)
    src = pair.source.images
    assert torch.equal(src[:, 0], src[:, 2])  # grey digits repeated to RGB
    small = load("digits-m", cache_dir=cache, image_size=16)
    assert small.source.image_shape == small.source_test.image_shape == (3, 16, 16)


def test_load_unknown_name_lists_known(cache):
    with pytest.raises(DataError) as e:
        load("mnist", cache_dir=cache)
    for name in ["digits", "synth-digits", "digits-m", "synth-digits->digits"]:
        assert name in str(e.value)
    with pytest.raises(DataError, match="known"):
        load("digits->svhn", cache_dir=cache)


def test_load_split_depends_on_seed(cache):
    a = load("digits", seed=0, cache_dir=cache, test_fraction=0.3)
    b = load("digits", seed=1, cache_dir=cache, test_fraction=0.3)
    assert len(a.source_test) == len(b.source_test)
    assert not torch.equal(a.source_test.images, b.source_test.images)


# -- few_labels ---------------------------------------------------------------------------------
def test_few_labels_single_domain_makes_unlabelled_pool(cache):
    pair = load("digits", cache_dir=cache)
    few = few_labels(pair, 5, seed=0)
    assert torch.bincount(few.source.labels, minlength=10).tolist() == [5] * 10
    assert len(few.source) + len(few.target) == len(pair.source)
    assert (few.target.labels == UNLABELLED).all()
    assert few.target_test is pair.source_test
    # the pool really is the rest: no labelled image reappears in it
    src = {bytes(x.numpy()) for x in few.source.images}
    assert not src & {bytes(x.numpy()) for x in few.target.images}
    again = few_labels(pair, 5, seed=0)
    other = few_labels(pair, 5, seed=1)
    assert torch.equal(again.source.images, few.source.images)
    assert not torch.equal(other.source.images, few.source.images)


def test_few_labels_with_target_drops_rest(cache):
    pair = load("synth-digits->digits", cache_dir=cache)
    few = few_labels(pair, 3)
    assert len(few.source) == 30
    assert few.target is pair.target and few.target_test is pair.target_test


def test_few_labels_k_too_large(cache):
    pair = load("digits", cache_dir=cache)
    with pytest.raises(DataError, match="fewer than 500 labelled samples in 10 class"):
        few_labels(pair, 500)
    with pytest.raises(DataError, match="positive integer"):
        few_labels(pair, 0)


# -- augmentation -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch(cache):
    return bundled.build("digits-m", cache_dir=cache).images[:64].float() / 255


@pytest.mark.parametrize("aug", [weak_augment, strong_augment, colour_augment])
def test_augment_shape_range_determinism(batch, aug):
    out = aug(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0 and out.max() <= 1
    again = aug(batch, torch.Generator().manual_seed(0))
    other = aug(batch, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    assert not torch.equal(out, other)
    changed = (out - batch).abs().flatten(1).amax(1) > 0
    assert changed.float().mean() > 0.6  # most images moved (a zero shift is allowed)


def test_weak_augment_is_a_translation(batch):
    out = weak_augment(batch, torch.Generator().manual_seed(0))
    # every output image equals its input shifted by at most 32/8 = 4 pixels somewhere inside
    for i in range(8):
        found = False
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                a = out[i, :, 4:-4, 4:-4]
                b = batch[i, :, 4 + dy : 28 + dy, 4 + dx : 28 + dx]
                found |= torch.equal(a, b)
        assert found


def test_strong_differs_more_than_weak(batch):
    g = torch.Generator().manual_seed(0)
    weak = (weak_augment(batch, g) - batch).abs().mean()
    strong = (strong_augment(batch, g) - batch).abs().mean()
    assert strong > weak


def test_colour_augment_paints_background_and_ink(batch):
    grey = batch.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    out = colour_augment(grey, torch.Generator().manual_seed(0))
    # per image and channel an affine map a + (b - a) x: exactly linear in the input
    for i in range(4):
        for c in range(3):
            x, y = grey[i, c].flatten(), out[i, c].flatten()
            slope = (y[x.argmax()] - y[x.argmin()]) / (x.max() - x.min())
            assert torch.allclose(y, y[x.argmin()] + slope * (x - x.min()), atol=1e-5)
    # channels get different colours (grey in, colour out); about half the images inverted
    assert (out[:, 0] - out[:, 1]).abs().mean() > 0.05
    ink_darker = (out.flatten(1) * grey.flatten(1)).mean(1) < out.flatten(1).mean(1) * grey.flatten(
        1
    ).mean(1)
    assert 0.2 < ink_darker.float().mean() < 0.8


def test_augment_rejects_uint8():
    with pytest.raises(DataError, match="float"):
        weak_augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


# -- from_arrays --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, expected",
    [
        ((6, 10, 12), (1, 10, 12)),
        ((6, 1, 10, 12), (1, 10, 12)),
        ((6, 3, 10, 12), (3, 10, 12)),
        ((6, 10, 12, 3), (3, 10, 12)),
        ((6, 10, 12, 1), (1, 10, 12)),
    ],
)
@pytest.mark.parametrize("kind", ["numpy-uint8", "torch-float"])
def test_from_arrays_layouts(shape, expected, kind):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    data = x if kind == "numpy-uint8" else torch.from_numpy(x).float() / 255
    d = from_arrays(data, [0, 1, 2, 0, 1, 2])
    assert isinstance(d, Domain) and d.image_shape == expected and d.images.dtype == torch.uint8
    assert d.classes == ("0", "1", "2")
    # the pixels survived the layout change and the float round trip
    chw = np.moveaxis(x, -1, 1) if shape[-1] in (1, 3) and shape[1] not in (1, 3) else x
    assert np.array_equal(d.images.numpy().reshape(chw.shape), chw)


def test_from_arrays_forced_channels_last():
    x = np.zeros((4, 3, 5, 3), dtype=np.uint8)  # ambiguous: (N, 3, 5, 3)
    x[:, 0, 0, 1] = 7
    assert from_arrays(x, [0] * 4).image_shape == (3, 5, 3)
    d = from_arrays(x, [0] * 4, channels_last=True)
    assert d.image_shape == (3, 3, 5) and d.images[0, 1, 0, 0] == 7


def test_from_arrays_errors():
    with pytest.raises(DataError, match=r"\(4, 2\).*expected"):
        from_arrays(np.zeros((4, 2)), [0] * 4)
    with pytest.raises(DataError, match=r"rank 5"):
        from_arrays(np.zeros((2, 1, 3, 4, 4)), [0, 0])
    with pytest.raises(DataError, match="4 channels.*alpha"):
        from_arrays(np.zeros((2, 8, 8, 4), dtype=np.uint8), [0, 0])
    with pytest.raises(DataError, match="1 .grayscale. or 3"):
        from_arrays(np.zeros((2, 5, 8, 8), dtype=np.uint8), [0, 0])
    with pytest.raises(DataError, match=r"\[0, 1\].*255"):
        from_arrays(np.full((2, 8, 8), 200.0), [0, 0])
    with pytest.raises(DataError, match="no images"):
        from_arrays(np.zeros((0, 8, 8), dtype=np.uint8), [])
    with pytest.raises(DataError, match="0..255"):
        from_arrays(np.full((2, 8, 8), 300), [0, 0])


def test_from_arrays_unlabelled_needs_classes():
    d = from_arrays(np.zeros((3, 4, 4), dtype=np.uint8), None, classes=["a", "b"])
    assert d.num_labelled == 0 and d.num_classes == 2
    with pytest.raises(DataError, match="classes"):
        from_arrays(np.zeros((3, 4, 4), dtype=np.uint8), None)


# -- from_folder --------------------------------------------------------------------------------
def test_from_folder_reads_imagefolder(tmp_path):
    colours = {"zebra": (255, 0, 0), "ant": (0, 0, 255)}
    for cls, rgb in colours.items():
        (tmp_path / cls / "sub").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20 + i, 30), rgb).save(tmp_path / cls / f"{i}.png")
        Image.new("L", (10, 10), 128).save(tmp_path / cls / "sub" / "grey.png")
        (tmp_path / cls / "notes.txt").write_text("not an image")
    d = from_folder(tmp_path, image_size=16, name="toy", in_memory=True)
    assert d.classes == ("ant", "zebra")  # sorted like torchvision
    assert d.image_shape == (3, 16, 16) and len(d) == 8 and d.name == "toy"
    assert torch.bincount(d.labels).tolist() == [4, 4]
    ant = d.images[d.labels == 0]
    assert (ant[:, 2] == 255).sum() == 3 * 16 * 16  # the three blue ones
    assert (ant[:, :, 0, 0] == 128).all(dim=1).sum() == 1  # the grey one converted to RGB


def test_from_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        from_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="no class sub-folders"):
        from_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        from_folder(tmp_path)
    (tmp_path / "cat" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        from_folder(tmp_path)


# -- from_torchvision ---------------------------------------------------------------------------
def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 + array.ndim  # type 0x08 = unsigned byte, then the rank
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape)
    path.write_bytes(header + array.tobytes())


def _tiny_mnist(root, n_train=20, n_test=10):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = {}
    for split, n in [("train", n_train), ("t10k", n_test)]:
        images = rng.integers(0, 256, (n, 28, 28))
        labels = np.arange(n) % 10
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
        data[split] = images, labels
    return data


def test_from_torchvision_offline_mnist(tmp_path):
    data = _tiny_mnist(tmp_path)
    d = from_torchvision("MNIST", tmp_path)
    assert len(d) == 20 and d.image_shape == (1, 28, 28) and d.num_classes == 10
    assert np.array_equal(d.images[:, 0].numpy(), data["train"][0])
    assert d.labels.tolist() == data["train"][1].tolist()
    test = from_torchvision("MNIST", tmp_path, train=False, image_size=14)
    assert len(test) == 10 and test.image_shape == (1, 14, 14)


def test_from_torchvision_errors(tmp_path):
    with pytest.raises(DataError, match="download=True"):
        from_torchvision("MNIST", tmp_path, download=False)
    with pytest.raises(DataError, match="not a torchvision dataset.*CIFAR10"):
        from_torchvision("NotADataset", tmp_path)
    with pytest.raises(DataError, match="not a torchvision dataset"):
        from_torchvision("utils", tmp_path)


def test_public_api_reexports():
    for name in datasets.__all__:
        assert hasattr(datasets, name)
    assert datasets.__doc__ and "load" in datasets.__doc__


def test_print_cold_build_time(tmp_path, capsys):
    """Not an assertion on speed: prints how long a cold build of all three takes (-s shows it)."""
    t0 = time.perf_counter()
    for name in SINGLES:
        bundled.build(name, cache_dir=tmp_path)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for name in SINGLES:
        bundled.build(name, cache_dir=tmp_path)
    warm = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\ncold build of {SINGLES}: {cold:.2f} s; from cache: {warm:.3f} s")
    assert warm < cold
