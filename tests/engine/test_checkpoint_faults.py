"""Faults that must never lose or corrupt work: checkpoints that are finite in every tensor, run
identity and the feature cache keyed by the data's content, damaged files refused, full disks
reported in plain words without losing the model, earlier runs' checkpoints kept aside, and
``resume=True`` on an empty folder starting fresh."""

from __future__ import annotations

import errno
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import thumbnail_photos

import tlkit
from tlkit.engine.checkpoint import save_checkpoint
from tlkit.errors import CheckpointError, TrainingError


def non_finite(obj, name=""):
    """Names of the floating-point tensors anywhere in ``obj`` that hold inf/NaN."""
    if isinstance(obj, torch.Tensor):
        bad = obj.is_floating_point() and not bool(torch.isfinite(obj).all())
        return [name] if bad else []
    if isinstance(obj, dict):
        return [n for k, v in obj.items() for n in non_finite(v, f"{name}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in non_finite(v, f"{name}[{i}]")]
    return []


def same_weights(a, b) -> bool:
    wa, wb = a.model.state_dict(), b.model.state_dict()
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- 1. every tensor of a checkpoint is finite ------------------------------------------------
def test_a_diverging_run_writes_no_checkpoint_with_non_finite_optimizer_state(
    tiny_task, fast, tmp_path
):
    """lr=1e6 with DANN: the weights stay finite one step longer than Adam's second moments."""
    with pytest.raises(TrainingError) as err:
        tlkit.fit(
            tiny_task,
            epochs=3,
            checkpoint_dir=str(tmp_path),
            checkpoint_every=1,
            log_every=1,
            adapt="dann",
            **{**fast, "lr": 1e6},
        )
    written = sorted(tmp_path.glob("*.pt"))
    assert written
    for path in written:
        assert non_finite(torch.load(path, weights_only=True)) == [], path
    message = str(err.value)
    assert f"The last good checkpoint is kept at {tmp_path / 'last.pt'}" in message
    assert "Try a lower lr" in message


def test_poisoned_optimizer_state_stops_the_run_and_names_the_good_checkpoint(
    tiny_task, fast, tmp_path
):
    class Poison:  # weights stay finite: Adam divides by an infinite second moment
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer):
            if trainer.state.step == 3:
                moments = next(iter(trainer.optimizer.state.values()))
                moments["exp_avg_sq"].fill_(float("inf"))

    with pytest.raises(TrainingError, match=r"non-finite \(optimizer\..*exp_avg_sq\)") as err:
        tlkit.fit(
            tiny_task,
            epochs=2,
            checkpoint_dir=str(tmp_path),
            checkpoint_every=2,
            observers=[Poison()],
            **fast,
        )
    assert f"The last good checkpoint is kept at {tmp_path / 'last.pt'}" in str(err.value)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["state"]["step"] == 2 and non_finite(saved) == []


def test_non_finite_checkpoints_are_neither_resumed_nor_saved(tiny_task, fast, tmp_path):
    opts = dict(epochs=2, checkpoint_dir=str(tmp_path), **fast)
    run = tlkit.fit(tiny_task, max_steps=2, **opts)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    next(iter(ckpt["optimizer"]["state"].values()))["exp_avg_sq"].fill_(float("nan"))
    save_checkpoint({k: v for k, v in ckpt.items() if k not in ("format", "version")},
                    tmp_path / "last.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match=r"non-finite values \(optimizer\..*exp_avg_sq\)"):
        tlkit.fit(tiny_task, resume=True, **opts)
    with torch.no_grad():
        next(run.model.parameters()).fill_(float("inf"))
    with pytest.raises(CheckpointError, match="non-finite values"):
        run.save(tmp_path / "run.pt")
    assert not (tmp_path / "run.pt").exists()


# -- 2. run identity covers the data's content ------------------------------------------------
def test_resuming_on_other_image_content_is_refused(fast, tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 1, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.arange(48) % 4
    first = tlkit.datasets.from_arrays(images, labels)
    inverted = tlkit.datasets.from_arrays(255 - images, labels)
    opts = dict(epochs=2, checkpoint_dir=str(tmp_path), **fast)
    tlkit.fit(first, max_steps=2, **opts)
    with pytest.raises(CheckpointError, match=r"another run: it differs in data \(source"):
        tlkit.fit(inverted, resume=True, **opts)
    resumed = tlkit.fit(first, resume=True, **opts)  # the same content still resumes
    assert len(resumed.history) == 2


def test_resuming_on_another_folder_of_the_same_name_is_refused(fast, tmp_path):
    one = thumbnail_photos(tmp_path / "a" / "photos", per_class=3, seed=0).root
    two = thumbnail_photos(tmp_path / "b" / "photos", per_class=3, seed=1).root
    opts = dict(epochs=1, image_size=16, checkpoint_dir=str(tmp_path / "ckpt"), **fast)
    tlkit.fit(tlkit.datasets.from_folder(one, progress=False), max_steps=1, **opts)
    with pytest.raises(CheckpointError, match=r"differs in data \(source"):
        tlkit.fit(tlkit.datasets.from_folder(two, progress=False), resume=True, **opts)


# -- 3. the feature cache is keyed by content -------------------------------------------------
def test_overwritten_images_are_not_served_from_the_feature_cache(fast, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    photos = thumbnail_photos(tmp_path / "photos", per_class=4)
    folder = photos.root
    opts = dict(
        epochs=1, image_size=16, mode="feature_extraction", feature_ram_budget=0.0, **fast
    )
    first = tlkit.fit(tlkit.datasets.from_folder(folder, progress=False), **opts)
    stores = tmp_path / "cache" / "features"
    before = {p.name for p in stores.iterdir()}
    assert before  # the features went to disk
    for path in map(photos.path, photos.images):
        with Image.open(path) as img:
            size = img.size
        Image.new("RGB", size).save(path)  # every image black, same names
    second = tlkit.fit(tlkit.datasets.from_folder(folder, progress=False), **opts)
    after = {p.name for p in stores.iterdir()}
    assert after - before, "the second run reused the features of the old images"
    assert second.history[0]["train_loss"] != first.history[0]["train_loss"]


# -- 4. damaged bytes are refused, naming the file --------------------------------------------
def damage_largest_tensor(path: Path, count: int = 100) -> None:
    """Flip one exponent bit in ``count`` floats of the largest tensor inside the archive, as a
    failing disk or a bad copy would (the zip's CRC is left as it was)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        start = info.header_offset + 30 + name_len + extra_len
        for k in range(min(count, info.file_size // 4)):
            f.seek(start + 4 * k + 3)  # the high byte of a little-endian float32
            byte = f.read(1)[0]
            f.seek(start + 4 * k + 3)
            f.write(bytes([byte ^ 0x40]))


def test_damaged_checkpoints_are_refused_on_every_load_path(tiny_task, fast, tmp_path):
    opts = dict(epochs=1, checkpoint_dir=str(tmp_path / "ckpt"), **fast)
    run = tlkit.fit(tiny_task, **opts)
    saved = run.save(tmp_path / "run.pt")
    for path in (saved, tmp_path / "ckpt" / "best.pt", tmp_path / "ckpt" / "last.pt"):
        damage_largest_tensor(path)
        with pytest.raises(CheckpointError, match="damaged") as err:
            tlkit.load(path)
        assert str(path) in str(err.value)
    with pytest.raises(CheckpointError, match="damaged") as err:
        tlkit.fit(tiny_task, resume=True, **opts)
    assert str(tmp_path / "ckpt" / "last.pt") in str(err.value)


# -- 6. a full disk: plain words, no partial file, the model kept -----------------------------
@pytest.fixture
def full_disk(monkeypatch):
    """Make every write to a file under the given folders fail with ENOSPC."""
    folders: list[str] = []
    real = os.write

    def write(fd, data):
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = ""
        if any(where.startswith(f) for f in folders):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)

    def fill(folder: Path) -> Path:
        folders.append(str(Path(folder).resolve()))
        return folder

    return fill


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_during_a_checkpoint_write_is_reported_in_plain_words(tmp_path, full_disk):
    path = save_checkpoint({"model": {"w": torch.ones(3)}}, tmp_path / "last.pt")
    full_disk(tmp_path)
    with pytest.raises(OSError, match="no space left on device") as err:
        save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    assert "inline_container" not in str(err.value) and str(path) in str(err.value)
    assert leftovers(tmp_path) == ["last.pt"]


def test_training_goes_on_when_checkpoints_cannot_be_written(tiny_task, fast, tmp_path, full_disk):
    full_disk(tmp_path)
    with pytest.warns(UserWarning, match="no space left on device"):
        run = tlkit.fit(
            tiny_task, epochs=2, checkpoint_dir=str(tmp_path), checkpoint_every=2, **fast
        )
    assert len(run.history) == 2  # the trained model is returned
    assert [n for n in leftovers(tmp_path) if not n.startswith(".tlkit.lock")] == []


def test_run_save_on_a_full_disk_keeps_the_model_elsewhere(
    tiny_task, fast, tmp_path, full_disk, monkeypatch
):
    run = tlkit.fit(tiny_task, epochs=1, **fast)
    target = full_disk(tmp_path / "full")
    target.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with pytest.raises(OSError, match="no space left on device") as err:
        run.save(target / "run.pt")
    assert leftovers(target) == []
    rescued = list((tmp_path / "tmp").rglob("*.pt"))
    assert len(rescued) == 1 and str(rescued[0]) in str(err.value)
    x = tiny_task.source_test.images
    assert torch.equal(tlkit.load(rescued[0]).predict(x), run.predict(x))


def test_run_save_says_when_the_model_could_be_kept_nowhere(
    tiny_task, fast, tmp_path, full_disk, monkeypatch
):
    run = tlkit.fit(tiny_task, epochs=1, **fast)
    monkeypatch.setattr(tempfile, "tempdir", str(full_disk(tmp_path)))
    with pytest.raises(OSError, match="no space left on device.*still in this Run"):
        run.save(tmp_path / "run.pt")
    assert leftovers(tmp_path) == []


def test_run_save_into_a_read_only_folder_is_explained(tiny_task, fast, tmp_path, monkeypatch):
    run = tlkit.fit(tiny_task, epochs=1, **fast)
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == tmp_path:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match="read-only file system") as err:
        run.save(tmp_path / "run.pt")
    assert str(tmp_path / "run.pt") in str(err.value)


def test_a_full_disk_at_the_start_fails_before_training(tiny_task, fast, tmp_path, monkeypatch):
    from tlkit.engine import checkpoint

    class FullFile:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def flush(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self.f.close()

    monkeypatch.setattr(checkpoint, "open", lambda *a, **k: FullFile(open(*a, **k)), raising=False)
    with pytest.raises(tlkit.ConfigError, match="cannot be written \\(no space left on device"):
        tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), **fast)


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_export_onto_a_full_disk_leaves_no_partial_file(tiny_task, fast, tmp_path, full_disk,
                                                         suffix):  # fmt: skip
    if suffix == ".onnx":
        pytest.importorskip("onnxscript")
    run = tlkit.fit(tiny_task, epochs=1, **fast)
    full_disk(tmp_path)
    with pytest.raises(OSError, match="no space left on device"):
        run.export(tmp_path / f"model{suffix}")
    assert leftovers(tmp_path) == []


def test_cli_fit_save_on_a_full_disk_says_where_the_model_went(
    tmp_path, full_disk, monkeypatch, capsys
):
    from tlkit.cli import main

    folder = thumbnail_photos(tmp_path / "photos", per_class=3).root
    out = full_disk(tmp_path / "out")
    out.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    args = ["fit", "--data", str(folder), "--backbone", "small_cnn", "--epochs", "1"]
    code = main([*args, "--image-size", "16", "--save", str(out / "run.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no space left on device" in err
    rescued = list((tmp_path / "tmp").rglob("*.pt"))
    assert len(rescued) == 1 and str(rescued[0]) in err
    assert tlkit.load(rescued[0]).classes == ["astronaut", "chelsea", "coffee", "rocket"]


# -- 7. an earlier run's checkpoints are moved aside ------------------------------------------
def test_a_rerun_moves_the_earlier_checkpoints_aside(tiny_task, fast, tmp_path, capsys):
    opts = dict(epochs=2, checkpoint_dir=str(tmp_path), **fast)
    tlkit.fit(tiny_task, max_steps=5, **opts)
    capsys.readouterr()
    tlkit.fit(tiny_task, max_steps=2, **opts)  # the same command, without resume
    lines = [line for line in capsys.readouterr().err.splitlines() if "previous" in line]
    assert len(lines) == 1 and str(tmp_path / "previous") in lines[0]
    kept = torch.load(tmp_path / "previous" / "last.pt", weights_only=True)
    assert kept["state"]["step"] == 5
    assert torch.load(tmp_path / "last.pt", weights_only=True)["state"]["step"] == 2
    tlkit.fit(tiny_task, max_steps=1, **{**opts, "seed": 1})  # another run: moved aside too
    assert (tmp_path / "previous-2" / "last.pt").exists()
    assert torch.load(tmp_path / "previous" / "last.pt", weights_only=True)["state"]["step"] == 5


# -- 8. resume=True before the first checkpoint ----------------------------------------------
def test_resume_before_the_first_checkpoint_starts_fresh(tiny_task, fast, tmp_path, capsys):
    opts = dict(epochs=1, **fast)
    fresh = tlkit.fit(tiny_task, **opts)
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "new"), resume=True, **opts)
    assert resumed.history == fresh.history and same_weights(resumed, fresh)
    notices = [line for line in capsys.readouterr().err.splitlines() if "starting" in line]
    assert len(notices) == 1 and "no checkpoint" in notices[0]
    with pytest.raises(CheckpointError, match="does not exist"):  # a named file must exist
        tlkit.fit(tiny_task, resume=tmp_path / "missing.pt", **opts)


def test_weights_missing_a_buffer_are_refused_naming_it():
    """A regression head without its target-scale buffers would predict in the wrong units:
    the file is refused, naming what is missing, rather than filled in."""
    from tlkit.backbones.target_scale import TargetScale
    from tlkit.engine.checkpoint import load_weights

    head = torch.nn.Sequential(torch.nn.Linear(3, 1))
    head.scale = TargetScale(1)
    partial = {k: v for k, v in head.state_dict().items() if not k.startswith("scale.")}
    with pytest.raises(CheckpointError, match=r"'old.pt'.*missing: scale.mean"):
        load_weights(head, partial, "model", "old.pt")
