"""``fit(task, backbone=..., model=...)``: the model decides the network, so a backbone name that
names another network is refused before training, with both names and the fix."""

from __future__ import annotations

import pytest
from conftest import pattern_domain

import tlkit
from tlkit.backbones import create_model
from tlkit.errors import ConfigError

OPTS = dict(mode="full", epochs=1, batch_size=16, progress=False, seed=0)


def test_a_backbone_name_that_contradicts_the_model_is_refused():
    domain = pattern_domain(32, seed=0, name="s")
    model = create_model("small_cnn", 4, pretrained=False)
    with pytest.raises(ConfigError, match=r"backbone='mlp'.*model= is a 'small_cnn'"):
        tlkit.fit(domain, "mlp", model=model, **OPTS)
    run = tlkit.fit(domain, "small_cnn", model=model, **OPTS)  # the same name: fine
    with pytest.raises(ConfigError, match=r"backbone='mlp'.*model= is a 'small_cnn'"):
        tlkit.fit(domain, backbone="mlp", model=run, **OPTS)  # a finished Run as the model


def test_the_model_alone_still_decides_the_backbone():
    domain = pattern_domain(32, seed=0, name="s")
    run = tlkit.fit(domain, model=create_model("small_cnn", 4, pretrained=False), **OPTS)
    assert run.config.backbone == "small_cnn"
