"""WebDataset shards: pack a folder or domain, read it back with labels from the sidecar index,
random access by seek, shard-local epoch order, foreign shards indexed from tar headers."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from tlkit.datasets import DataError, backing, from_arrays, from_folder, from_shards, pack


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for cls in ("ant", "bee"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            arr = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_pack_and_read_back(folder, tmp_path, monkeypatch):
    d = from_folder(folder)
    pattern = pack(folder, tmp_path / "out", shard_size=4, progress=False)
    assert pattern == str(tmp_path / "out" / "data-{000000..000002}.tar")
    meta = json.loads((tmp_path / "out" / "data-index.json").read_text())
    assert meta["count"] == 10 and meta["classes"] == ["ant", "bee"]
    assert [s["count"] for s in meta["shards"]] == [4, 4, 2] and meta["class_counts"] == [5, 5]
    with tarfile.open(tmp_path / "out" / "data-000000.tar") as tar:
        assert tar.getnames()[:2] == ["00000000.cls", "00000000.jpg"]  # a plain WebDataset tar

    def boom(*a, **k):
        raise AssertionError("decoded while reading labels")

    monkeypatch.setattr(backing, "decode_bytes", boom)
    s = from_shards(pattern)
    assert len(s) == 10 and s.classes == d.classes and torch.equal(s.labels, d.labels)
    train, test = s.split(0.4)  # labels only
    assert len(train) == 6 and not train.in_memory
    monkeypatch.undo()
    for i in (0, 3, 9):  # same pixels as the files (bytes copied, never re-encoded)
        assert torch.equal(s.dataset()[i][0], d.dataset()[i][0])
    assert s.paths[3].endswith("data-000000.tar:00000003.png")
    with pytest.raises(DataError, match="already holds shards"):
        pack(folder, tmp_path / "out", progress=False)


def test_shard_epoch_order_is_shard_local_and_seeded(folder, tmp_path):
    s = from_shards(pack(folder, tmp_path / "out", shard_size=3, progress=False))
    order = s.epoch_order(seed=0, epoch=0).numpy()
    shard = s.backing.shard[order]
    assert sorted(order.tolist()) == list(range(10))
    assert (np.diff(shard) != 0).sum() == 3  # 4 shards, visited one after the other
    assert not np.array_equal(order, s.epoch_order(0, 1).numpy())
    assert np.array_equal(order, s.epoch_order(0, 0).numpy())
    ranks = [s.stream(seed=0, rank=r, world_size=2, batch_size=2).rank_indices() for r in (0, 1)]
    assert sorted(np.concatenate(ranks).tolist()) == list(range(10))


def test_in_memory_domain_packs_as_png_and_foreign_shards_are_indexed(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    d = from_arrays(x, [0, 1, 2, 0, 1, 2])
    pattern = pack(d, tmp_path / "mem", name="digits", progress=False)
    for f in (tmp_path / "mem").glob("digits-index.*"):
        f.unlink()  # as if written by another tool: no sidecar index
    s = from_shards(pattern)
    assert len(s) == 6 and s.labels.tolist() == [0, 1, 2, 0, 1, 2]
    img = s.dataset()[2][0]
    assert img.shape == (3, 8, 8) and torch.equal(img[0], torch.from_numpy(x[2]))
    with pytest.raises(DataError, match="does not exist"):
        from_shards(str(tmp_path / "mem" / "nope-{000000..000001}.tar"))


def test_pack_refuses_tensor_domains(tmp_path):
    from tlkit.datasets import from_tensors

    with pytest.raises(DataError, match="image shards.*torch.save"):
        pack(from_tensors(np.zeros((4, 3), dtype=np.float32), [0, 1, 0, 1]), tmp_path)
