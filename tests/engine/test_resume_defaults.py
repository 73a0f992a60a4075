"""Resuming a checkpoint written under another default: an option left at its default takes the
checkpoint's value (batch size, image size, augmentation) and the run says so in one line; an
option set to another value is refused, naming it."""

from __future__ import annotations

import pytest
import torch

import tlkit
from tlkit.datasets import Domain, DomainPair
from tlkit.engine.checkpoint import save_checkpoint
from tlkit.errors import CheckpointError

OPTS = dict(backbone="small_cnn", mode="full", lr=3e-3, epochs=2, progress=False, seed=0)


def weights(run):
    return {k: v.clone() for k, v in run.model.state_dict().items()}


def assert_same_run(a, b):
    assert a.history == b.history
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def resume_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "left at its default" in line]


def test_a_batch_64_checkpoint_resumes_with_the_default_batch_size(tiny_task, tmp_path, capsys):
    """96 training samples: batch 64 is 2 steps an epoch, the default ("auto") would be 24."""
    whole = tlkit.fit(tiny_task, batch_size=64, **OPTS)
    tlkit.fit(tiny_task, batch_size=64, checkpoint_dir=str(tmp_path), max_steps=1, **OPTS)
    capsys.readouterr()
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), resume=True, **OPTS)
    assert_same_run(resumed, whole)
    assert resumed.config.batch_size == 64
    lines = resume_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "batch_size=64" in lines[0], lines
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["identity"]["batch_size"] == 64 and saved["state"]["step"] == 4


def test_an_explicit_other_batch_size_is_still_refused(tiny_task, tmp_path):
    tlkit.fit(tiny_task, batch_size=64, checkpoint_dir=str(tmp_path), max_steps=1, **OPTS)
    with pytest.raises(CheckpointError, match=r"differs in batch_size \(64 there, 32 here\)"):
        tlkit.fit(tiny_task, batch_size=32, checkpoint_dir=str(tmp_path), resume=True, **OPTS)


def test_a_default_run_resumes_without_a_line(tiny_task, tmp_path, capsys):
    whole = tlkit.fit(tiny_task, **OPTS)
    tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), max_steps=3, **OPTS)
    capsys.readouterr()
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), resume=True, **OPTS)
    assert_same_run(resumed, whole)
    assert resumed.config.batch_size == "auto"
    assert resume_lines(capsys.readouterr().err) == []


def sized_task(size: int = 16) -> DomainPair:
    """In-memory images that carry their size (as ``load(name, image_size=16)`` makes them)."""
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(48, 3, size, size, generator=g) * 255).to(torch.uint8)
    labels = torch.arange(48) % 3
    images[labels == 1, 0] = 255  # learnable: a red channel per class
    images[labels == 2, 2] = 255
    domain = Domain(images, labels, classes=("a", "b", "c"), name="sized", image_size=size)
    return DomainPair(domain, name="sized")


def test_a_checkpoint_trained_at_the_backbone_size_resumes_at_that_size(tmp_path, capsys):
    """A checkpoint whose run left image_size unset but trained at the small CNN's 32 px (the
    rule before the data's own size came first) resumes at 32 px, not at the data's 16."""
    task = sized_task(16)
    opts = dict(OPTS, batch_size=12)
    whole = tlkit.fit(task, image_size=32, **opts)
    tlkit.fit(task, image_size=32, checkpoint_dir=str(tmp_path), max_steps=2, **opts)
    path = tmp_path / "last.pt"
    old = torch.load(path, weights_only=True)
    old.pop("format"), old.pop("version")
    old["identity"]["image_size"] = old["config"]["image_size"] = None  # unset, as then
    old["model_spec"]["image_size"] = 16  # the pipelines' size then; the network's was 32
    assert old["model_spec"]["input_size"] == 32
    save_checkpoint(old, path)
    capsys.readouterr()
    resumed = tlkit.fit(task, checkpoint_dir=str(tmp_path), resume=True, **opts)
    assert resumed.model.backbone.input_size == 32
    assert_same_run(resumed, whole)
    lines = resume_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "image_size=32" in lines[0], lines
    with pytest.raises(CheckpointError, match=r"differs in image_size \(.*24 here\)"):
        tlkit.fit(task, image_size=24, checkpoint_dir=str(tmp_path), resume=True, **opts)


def test_an_image_size_set_on_the_first_run_is_kept_on_resume(tmp_path, capsys):
    task = sized_task(16)
    opts = dict(OPTS, batch_size=12)
    whole = tlkit.fit(task, image_size=24, **opts)
    tlkit.fit(task, image_size=24, checkpoint_dir=str(tmp_path), max_steps=2, **opts)
    capsys.readouterr()
    resumed = tlkit.fit(task, checkpoint_dir=str(tmp_path), resume=True, **opts)
    assert resumed.model.backbone.input_size == 24 and resumed.config.image_size == 24
    assert_same_run(resumed, whole)
    lines = resume_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "image_size=24" in lines[0], lines


def test_a_checkpoint_with_augmentation_off_resumes_with_it_off(tiny_task, tmp_path, capsys):
    """augment=False in the checkpoint, "auto" (the default) here: the run keeps it off."""
    tlkit.fit(tiny_task, augment=False, checkpoint_dir=str(tmp_path), max_steps=1, **OPTS)
    capsys.readouterr()
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), resume=True, **OPTS)
    assert resumed.config.augment is False
    lines = resume_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "augment=False" in lines[0], lines


def test_a_refusal_names_the_values_that_resume_the_run(tiny_task, tmp_path):
    """An option the run resolves before it reads the checkpoint (domain_bn="auto": "separate"
    for DANN; "shared" was the default before) is refused with the value to pass."""
    opts = dict(OPTS, adapt="dann", batch_size=16)
    tlkit.fit(tiny_task, domain_bn="shared", checkpoint_dir=str(tmp_path), max_steps=1, **opts)
    with pytest.raises(CheckpointError, match=r"pass domain_bn='shared' to resume it") as info:
        tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), resume=True, **opts)
    assert "domain_bn ('shared' there, 'separate' here)" in str(info.value)
    resumed = tlkit.fit(
        tiny_task, domain_bn="shared", checkpoint_dir=str(tmp_path), resume=True, **opts
    )
    assert len(resumed.history) == 2
