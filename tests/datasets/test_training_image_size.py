"""The size a run trains at: ``image_size=``, else the size the data carries, else the
backbone's; ``image_size=`` resizes in-memory tensors too; every run prints it."""

from __future__ import annotations

import torch

import tlkit
from tlkit.datasets import from_folder, load
from tlkit.datasets.sizing import DEFAULT_IMAGE_SIZE, requested_image_size, training_image_size
from tlkit.testing import make_photo_folder

OPTS = dict(backbone="small_cnn", mode="full", epochs=1, max_steps=2, seed=0)


def seen_sizes(run_fit, **options) -> tuple[object, set]:
    """Fit, recording the spatial size of every batch the backbone's first layer sees."""
    sizes: set = set()

    def record(module, inputs):
        sizes.add(tuple(inputs[0].shape[-2:]))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, i: record(m, i) if isinstance(m, torch.nn.Conv2d) and i[0].shape[1] == 3
        else None
    )
    try:
        run = run_fit(**options)
    finally:
        handle.remove()
    return run, sizes


def test_data_loaded_at_a_size_trains_at_that_size(capsys):
    task = load("synth-digits->digits", image_size=16)
    assert task.source.image_size == 16 and task.target.image_size == 16
    run, sizes = seen_sizes(lambda **o: tlkit.fit(task, adapt="bnm", **o), **OPTS)
    assert run.model.backbone.input_size == 16
    assert sizes == {(16, 16)}
    assert "training at 16x16 px (the data's own size" in capsys.readouterr().err


def test_image_size_option_resizes_in_memory_tensors(capsys):
    task = load("synth-digits->digits", image_size=16)  # the data carries 16; the run asks 24
    run, sizes = seen_sizes(lambda **o: tlkit.fit(task, image_size=24, **o), **OPTS)
    assert run.model.backbone.input_size == 24
    assert sizes == {(24, 24)}
    assert "training at 24x24 px (image_size=)" in capsys.readouterr().err


def test_data_without_a_size_keeps_the_backbone_default(capsys):
    task = load("digits")  # 8x8 tensors carrying no size: the small CNN's 32
    assert task.source.image_size is None
    run, sizes = seen_sizes(lambda **o: tlkit.fit(task, **o), **OPTS)
    assert run.model.backbone.input_size == 32
    assert sizes == {(32, 32)}
    assert "training at 32x32 px (the backbone's default" in capsys.readouterr().err


def test_quiet_runs_print_nothing(capsys):
    tlkit.fit(load("digits"), progress=False, **OPTS)
    assert "image size" not in capsys.readouterr().err


def test_file_backed_photos_keep_the_default_and_their_own_size(tmp_path):
    photos = make_photo_folder(tmp_path / "p", classes=2, per_class=3, sizes=((80, 60),),
                               png_every=0, rotated=0, corrupt=0, csv=False)
    plain, sized = from_folder(photos.root), from_folder(photos.root, image_size=40)
    for task, size in ((plain, None), (sized, 40)):
        assert requested_image_size(None, task) == size
    no_size = type("Plain", (), {"input_size": None})()
    assert training_image_size(None, plain, no_size) == DEFAULT_IMAGE_SIZE
    assert training_image_size(None, sized, no_size) == 40
    assert training_image_size(48, sized, no_size) == 48
