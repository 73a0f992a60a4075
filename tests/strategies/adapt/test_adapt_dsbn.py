"""DSBN: each domain's BatchNorm statistics and affine parameters, picked by the forward domain."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tlkit_strategies.adapt.dsbn import DSBN, batchnorm_layers
from torch import nn

import tlkit
from tlkit.step import domain_context


class Net(nn.Module):
    """A 'backbone' that is one BatchNorm layer of 2 channels."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(2)
        self.name = "one_bn"

    def forward(self, x):
        return self.bn(x)


def set_up():
    backbone = Net()
    trainer = SimpleNamespace(
        model=SimpleNamespace(backbone=backbone), config=SimpleNamespace(domain_bn="separate")
    )
    dsbn = DSBN()
    branches = dsbn.tlkit_setup(trainer=trainer)
    return dsbn, backbone, branches[0]


def test_each_domain_updates_its_own_statistics_by_hand():
    dsbn, net, source = set_up()
    xs = torch.tensor([[1.0, 10.0], [3.0, 10.0]])  # batch means (2, 10)
    xt = torch.tensor([[-1.0, 0.0], [-5.0, 4.0]])  # batch means (-3, 2)
    with domain_context("source"):
        net(xs)
    with domain_context("target"):
        net(xt)
    m = net.bn.momentum  # running = (1 - m) * running + m * batch statistic; starts at 0 / 1
    assert torch.allclose(source.running_mean, m * torch.tensor([2.0, 10.0]))
    assert torch.allclose(net.bn.running_mean, m * torch.tensor([-3.0, 2.0]))
    var_t = torch.tensor([8.0, 8.0])  # unbiased: ((-1 + 3)^2 + (-5 + 3)^2) / 1, (4 + 4) / 1
    assert torch.allclose(net.bn.running_var, (1 - m) + m * var_t)
    assert int(source.num_batches_tracked) == 1 and int(net.bn.num_batches_tracked) == 1
    # outside a domain pass (a user's run.model(x)) the layer is the target's
    assert net.bn.weight is not source.weight


def test_affine_parameters_learn_per_domain_and_evaluation_uses_own_statistics():
    dsbn, net, source = set_up()
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    with domain_context("source"):
        net(x).pow(2).sum().backward()
    assert source.weight.grad is not None and net.bn.weight.grad is None
    with domain_context("target"):
        net(x).pow(2).sum().backward()
    assert net.bn.weight.grad is not None
    with torch.no_grad():
        source.running_mean.copy_(torch.tensor([1.0, 1.0]))
        source.weight.copy_(torch.tensor([2.0, 3.0]))
    net.eval()
    with domain_context("source"):
        out = net(x)
    expected = F.batch_norm(
        x, source.running_mean, source.running_var, source.weight, source.bias, False, 0.0, 1e-5
    )
    assert torch.allclose(out, expected)
    plain = F.batch_norm(
        x, net.bn.running_mean, net.bn.running_var, net.bn.weight, net.bn.bias, False, 0.0, 1e-5
    )
    with domain_context("target"):
        assert torch.allclose(net(x), plain)
    assert torch.allclose(net(x), plain)  # no domain: the target branch


def test_hooks_are_removed_at_the_end():
    dsbn, net, source = set_up()
    dsbn.tlkit_on_fit_end()
    x = torch.randn(4, 2)
    before = net.bn.running_mean.clone()
    with domain_context("source"):
        net(x)
    assert not torch.equal(net.bn.running_mean, before)  # a plain BatchNorm again


def test_dsbn_needs_separate_domain_passes(tiny_task, fast):
    with pytest.raises(tlkit.PluginError, match="domain_bn='separate'"):
        tlkit.fit(tiny_task, epochs=1, adapt="dsbn", domain_bn="shared", **fast)


def test_dsbn_through_fit_resumes_and_hands_out_the_target_model(tiny_task, fast, tmp_path):
    opts = dict(epochs=2, adapt=["dsbn", "dann"], domain_bn="separate", **fast)
    whole = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "a"), **opts)
    saved = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    branches = saved["extra_modules"]["dsbn"]
    plain = tlkit.backbones.create_model("small_cnn", 4, pretrained=False)
    assert set(saved["model"]) == set(plain.state_dict())  # the model's keys are unchanged
    assert not torch.equal(
        branches["0.running_mean"], saved["model"]["backbone.body.blocks.0.1.running_mean"]
    )
    # the model handed out evaluates the target as the history measured it
    acc = whole.evaluate(tiny_task.target_test)["accuracy"]
    assert acc == pytest.approx(whole.last["target_accuracy"])
    tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), max_steps=7, **opts)
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), resume=True, **opts)
    assert resumed.history == whole.history
    assert len(batchnorm_layers(whole.model)) == 3
