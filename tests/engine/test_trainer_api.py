"""tlkit.Trainer takes what tlkit.fit takes: the data, then the backbone, then options."""

from __future__ import annotations

import pytest
import torch

import tlkit


def _weights(run: tlkit.Run) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_trainer_takes_the_leading_arguments_of_fit(tiny_task):
    opts = dict(batch_size=16, progress=False)
    trainer = tlkit.Trainer(tiny_task, "small_cnn", epochs=1, **opts)
    assert trainer.config.backbone == "small_cnn" and trainer.config.epochs == 1
    by_trainer = trainer.fit()
    by_fit = tlkit.fit(tiny_task, "small_cnn", epochs=1, **opts)
    assert by_trainer.config == by_fit.config
    assert by_trainer.history == by_fit.history
    a, b = _weights(by_trainer), _weights(by_fit)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_defaults_are_fits(tiny_task):
    trainer = tlkit.Trainer(tiny_task, progress=False)
    assert trainer.config.backbone == "efficientnet_lite0" and trainer.config.epochs == 5


def test_a_config_in_the_backbone_position_is_explained(tiny_task):
    config = tlkit.FitConfig(backbone="small_cnn", epochs=1, progress=False)
    with pytest.raises(tlkit.ConfigError, match=r"backbone second, as tlkit\.fit does; pass a FitConfig as config="):
        tlkit.Trainer(tiny_task, config)
    trainer = tlkit.Trainer(tiny_task, config=config)
    assert trainer.config.backbone == "small_cnn"
    with pytest.raises(tlkit.ConfigError, match="either config= or"):
        tlkit.Trainer(tiny_task, config=config, lr=0.1)


def test_trainer_takes_a_module_an_earlier_run_and_a_dataset_name_as_fit_does(tiny_task):
    first = tlkit.Trainer(tiny_task, "small_cnn", epochs=1, batch_size=16, progress=False).fit()
    again = tlkit.Trainer(tiny_task, model=first, epochs=1, batch_size=16, progress=False)
    assert again.config.backbone == "small_cnn" and again.model is not first.model
    with pytest.raises(tlkit.ConfigError, match="unknown fit\\(\\) options \\['epocs'\\]"):
        tlkit.Trainer(tiny_task, "small_cnn", epocs=1)
