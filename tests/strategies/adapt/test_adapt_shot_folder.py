"""SHOT's pseudo-labels on a target decoded from files: the clustering pass reads the target
through the run's own batches (the evaluation transform), not an in-memory image tensor."""

from __future__ import annotations

import math

import pytest
import torch

import tlkit
from tlkit.datasets import DomainPair, from_folder
from tlkit.testing import make_photo_folder

OPTS = dict(backbone="small_cnn", image_size=32, batch_size=4, num_workers=0, lr=3e-3,
            progress=False, seed=0)


pytestmark = [
    pytest.mark.filterwarnings("ignore:Domain 'p'.*cannot be decoded"),
    pytest.mark.filterwarnings("ignore:Domain 'p'. skipping unreadable file"),
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("shot") / "p", classes=2, per_class=5,
                             sizes=((64, 48), (48, 64)), png_every=3, rotated=0, corrupt=1,
                             csv=False)


def test_shot_pseudo_labels_a_folder_target(photos, tmp_path):
    source = from_folder(photos.root)
    target = from_folder(photos.root, labels=False)
    assert not target.in_memory
    run = tlkit.fit(DomainPair(source, target=target, name="folders"), mode="full", epochs=1,
                    adapt=("shot", {"pseudo_label": 0.3, "warmup": 0.0}), log_every=1,
                    checkpoint_dir=str(tmp_path), **OPTS)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["strategy_state"]["shot"]
    labels = saved["labels"]
    assert labels is not None and len(labels) == len(target)
    corrupt = {str(photos.path(rel)) for rel in photos.corrupt}
    readable = [i for i, p in enumerate(target.paths) if str(p) not in corrupt]
    assert len(readable) == len(target) - len(photos.corrupt)
    assert set(labels[readable].tolist()) <= {0, 1}  # a class for every readable photo
    assert all(math.isfinite(w["shot"]) and w["shot"] != 0.0 for w in run.step_logs)


def test_source_free_shot_adapts_a_folder_target(photos):
    source = tlkit.fit(from_folder(photos.root), mode="full", epochs=1, **OPTS)
    target = from_folder(photos.root, labels=False)
    before = [p.detach().clone() for p in source.model.backbone.parameters()]
    run = tlkit.fit(target, model=source.model, adapt="shot", source_free=True, epochs=1,
                    **OPTS)
    assert math.isfinite(run.last["shot"])
    after = list(run.model.backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
