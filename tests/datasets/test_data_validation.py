"""Data mistakes users make: raw Python errors and silent mistakes become clear DataErrors or
warnings."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from tlkit.datasets import (
    DataError,
    DataWarning,
    Domain,
    DomainPair,
    from_arrays,
    from_folder,
)


def _png_header_only(path, width: int, height: int) -> None:
    """A valid PNG whose header claims ``width x height`` with one tiny IDAT: a bomb header
    that costs nothing to write (PIL reads only the header on open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(body + chunk(b"IEND", b""))


def _folder(root, classes=("a", "b"), n=2, size=(12, 10)):
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size, (40 * i, 100, 200)).save(root / c / f"{i}.png")
    return root


# -- labels ---------------------------------------------------------------------------------
def test_nan_labels_are_a_data_error():
    x = np.zeros((3, 4, 4), dtype=np.uint8)
    with pytest.raises(DataError, match="NaN.*-1"):
        from_arrays(x, [0.0, np.nan, 1.0])
    with pytest.raises(DataError, match="NaN"):
        from_arrays(x, [0.0, np.nan, 1.0], classes=["a", "b"])
    with pytest.raises(DataError, match="NaN or infinite"):
        Domain(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(DataError, match="NaN"):
        from_arrays(x, [1.0, np.inf, 2.0], task="regression")


def test_string_labels_map_to_classes_or_fail_clearly():
    x = np.zeros((4, 4, 4), dtype=np.uint8)
    d = from_arrays(x, ["dog", "cat", "dog", "cat"])
    assert d.classes == ("cat", "dog") and d.labels.tolist() == [1, 0, 1, 0]
    d = from_arrays(x, ["dog", "cat", "dog", "cat"], classes=["dog", "cat"])
    assert d.labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(DataError, match=r"\['bird'\] are not among classes"):
        from_arrays(x, ["dog", "bird", "dog", "cat"], classes=["dog", "cat"])
    with pytest.raises(DataError, match="missing"):
        from_arrays(x, ["dog", None, "dog", "cat"])
    with pytest.raises(DataError, match="regression targets must be numbers"):
        from_arrays(x, ["1.5", "x", "2", "3"], task="regression")
    with pytest.raises(DataError, match="labels must be numbers.*from_arrays"):
        Domain(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), np.array(["a", "b"]))


def test_stray_label_warns_about_sparse_class_ids():
    x = np.zeros((5, 4, 4), dtype=np.uint8)
    with pytest.warns(DataWarning, match=r"only 4 of the 100 class ids.*99.*classes="):
        d = from_arrays(x, [0, 1, 2, 1, 99])
    assert d.num_classes == 100  # still built as asked, but the user was told
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_arrays(x, [0, 1, 2, 1, 3])  # dense ids: silent
        from_arrays(x, [0, 1, 2, 1, 99], classes=[str(i) for i in range(100)])  # declared


def test_single_class_source_is_refused_but_target_is_fine():
    images = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    one = Domain(images, torch.zeros(6, dtype=torch.long), classes=("a", "b"), name="one")
    with pytest.raises(DataError, match=r"one class \('a'\).*at least two classes"):
        DomainPair(one)
    # unlabelled samples do not count as a second class
    mixed = Domain(images, torch.tensor([0, 0, 0, -1, -1, -1]), classes=("a", "b"))
    with pytest.raises(DataError, match="at least two classes"):
        DomainPair(mixed)
    two = Domain(images, torch.tensor([0, 1, 0, 1, 0, 1]), classes=("a", "b"))
    pair = DomainPair(two, target=one.unlabelled(), target_test=one)  # one-class target: fine
    assert pair.target.num_labelled == 0


# -- images ---------------------------------------------------------------------------------
def test_uint16_images_are_scaled_to_8_bit():
    x = np.array([[[0, 65535], [32896, 257]]] * 2, dtype=np.uint16)  # (2, 2, 2)
    d = from_arrays(x, [0, 1])
    assert d.images.dtype == torch.uint8
    assert d.images[0, 0].tolist() == [[0, 255], [128, 1]]
    t = from_arrays(torch.from_numpy(x.astype(np.int32)).to(torch.uint16), [0, 1])
    assert torch.equal(t.images, d.images)
    with pytest.warns(DataWarning, match="nearly black.*astype"):
        dark = from_arrays(np.full((2, 4, 4), 200, dtype=np.uint16), [0, 1])
    assert int(dark.images.max()) == 1
    with pytest.raises(DataError, match="uint8.*16-bit"):
        Domain(np.zeros((2, 1, 4, 4), dtype=np.uint16), [0, 1])
    with pytest.raises(DataError, match="uint32"):
        from_arrays(np.zeros((2, 4, 4), dtype=np.uint32), [0, 1])


@pytest.mark.parametrize("size", [0, -5, 100000, 2.5, "224", True])
def test_from_folder_rejects_absurd_image_sizes(tmp_path, size):
    _folder(tmp_path)
    with pytest.raises(DataError, match="image_size"):
        from_folder(tmp_path, image_size=size)
    with pytest.raises(DataError, match="image_size"):
        from_folder(tmp_path, image_size=size, in_memory=True)


def test_decompression_bomb_is_refused_by_the_header(tmp_path):
    _folder(tmp_path)
    _png_header_only(tmp_path / "a" / "bomb.png", 100_000, 100_000)
    assert (tmp_path / "a" / "bomb.png").stat().st_size < 200
    d = from_folder(tmp_path, check="none")
    bomb = d.paths.index(str(tmp_path / "a" / "bomb.png"))
    with pytest.raises(DataError, match=r"bomb\.png.*above the limit.*max_pixels"):
        d.dataset(strict=True)[bomb]
    with pytest.warns(DataWarning, match=r"skipping unreadable file .*bomb\.png"):
        assert d.dataset()[bomb] is None
    with pytest.raises(DataError, match="bomb.png"):
        from_folder(tmp_path, strict=True)  # the construction probe reads every header here
    with pytest.warns(DataWarning, match="1 of 5 checked files"):
        from_folder(tmp_path)


def test_corrupt_image_is_a_data_error_naming_the_file(tmp_path):
    _folder(tmp_path)
    good = (tmp_path / "a" / "0.png").read_bytes()
    (tmp_path / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated.png"):
        from_folder(tmp_path, in_memory=True, strict=True, image_size=8)
    with pytest.warns(DataWarning):
        d = from_folder(tmp_path, in_memory=True, image_size=8)  # strict=False: dropped
    assert len(d) == 4 and d.images.shape == (4, 3, 8, 8)


# -- folders --------------------------------------------------------------------------------
def test_16_bit_png_is_scaled_not_white(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)  # 0..63000
    Image.fromarray(ramp).save(tmp_path / "a" / "deep.png")
    Image.new("L", (8, 8), 10).save(tmp_path / "b" / "x.png")
    assert Image.open(tmp_path / "a" / "deep.png").mode.startswith("I")
    d = from_folder(tmp_path, image_size=8, in_memory=True)
    x = d.images[0, 0].int()
    expected = torch.from_numpy(np.round(ramp / 257.0).astype(np.int32))
    assert (x - expected).abs().max() <= 1
    assert x.float().mean() < 200  # the bug made every pixel 255
    lazy = from_folder(tmp_path).dataset()[0][0]
    assert (lazy[0].int() - expected).abs().max() <= 1


def test_hidden_folders_and_files_are_skipped(tmp_path):
    _folder(tmp_path)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / ".ipynb_checkpoints" / "x.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / ".hidden.png")
    (tmp_path / "b" / ".git").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / ".git" / "y.png")
    d = from_folder(tmp_path)
    assert d.classes == ("a", "b") and len(d) == 4
    assert not any("/." in p for p in d.paths)
    assert len(from_folder(tmp_path, labels=False)) == 4


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symlink_loop_does_not_multiply_or_mislabel(tmp_path):
    _folder(tmp_path, n=3)
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")  # a/loop -> a: infinite recursion
    os.symlink(tmp_path / "a", tmp_path / "b" / "alias")  # b/alias -> a: a's images "in b"
    os.symlink(tmp_path / "b" / "0.png", tmp_path / "a" / "linked.png")  # one file, two classes
    with pytest.warns(DataWarning, match="symbolic links|already listed"):
        d = from_folder(tmp_path)
    assert len(d) == 6  # 3 + 3 real images, each once
    assert torch.bincount(d.labels).tolist() == [3, 3]
    real = {os.path.realpath(p) for p in d.paths}
    assert len(real) == 6
    # a's images keep label a; b's 0.png keeps label b (its folder), not a via the link
    for p, y in zip(d.paths, d.labels.tolist()):
        assert os.path.realpath(p).startswith(str(tmp_path / ("a" if y == 0 else "b")))


def test_empty_class_folder_is_refused_with_the_fix(tmp_path):
    _folder(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"\['c'\].*hold no images.*classes="):
        from_folder(tmp_path)
    d = from_folder(tmp_path, classes=["a", "b", "c"])  # declared on purpose: allowed
    assert d.num_classes == 3 and torch.bincount(d.labels, minlength=3).tolist() == [2, 2, 0]
