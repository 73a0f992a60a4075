"""Backbones say what works offline; names that need a download fail fast offline, after at most
one attempt, with the download named. No test here touches the network: downloads and the
reachability probe are replaced, and counted."""

from __future__ import annotations

import time
import urllib.error

import pytest
import torch

from tlkit.backbones import BackboneError, create_backbone, offline
from tlkit.backbones.availability import backbone_availability, format_backbones

RESNET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches, no offline variables, and every way to the
    network replaced by a counter that fails."""
    from huggingface_hub import constants

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for var in (*offline.OFFLINE_ENV, *offline._PROXY_ENV):
        monkeypatch.delenv(var, raising=False)
    calls = {"download": 0, "probe": 0}

    def download(url, *args, **kwargs):
        calls["download"] += 1
        raise urllib.error.URLError("no network in tests")

    def probe(host, *args, **kwargs):
        calls["probe"] += 1
        return calls.get("reachable", True)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(offline, "reachable", probe)
    calls["checkpoints"] = tmp_path / "hub" / "checkpoints"
    return calls


def test_the_listing_marks_what_works_offline(no_network, capsys):
    rows = {r.name: r for r in backbone_availability()}
    for name in ("efficientnet_lite0", "small_cnn", "mlp", "text_bag", "text_cnn"):
        assert rows[name].offline, name
    assert rows["any name + weights=FILE"].offline
    for name in ("resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "timm:<name>"):
        assert not rows[name].offline, name
    assert RESNET_URL in rows["resnet18"].weights
    no_network["checkpoints"].mkdir(parents=True)
    torch.save({}, no_network["checkpoints"] / "resnet18-f37072fd.pth")
    cached = {r.name: r for r in backbone_availability()}["resnet18"]
    assert cached.offline and "cached at" in cached.weights
    text = format_backbones()
    header, *lines = text.splitlines()
    assert header.split() == ["backbone", "offline", "weights"]
    assert any(line.split()[:2] == ["resnet50", "no"] for line in lines)
    assert any(line.split()[:2] == ["efficientnet_lite0", "yes"] for line in lines)
    assert no_network["download"] == 0 and no_network["probe"] == 0  # listing never probes

    from tlkit.cli import main

    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "offline" in out and any(line.split()[:2] == ["resnet18", "yes"]
                                    for line in out.splitlines())  # fmt: skip


def test_offline_env_fails_at_once_without_trying_the_network(no_network, monkeypatch):
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    with pytest.raises(BackboneError) as info:
        create_backbone("resnet18")
    message = str(info.value)
    assert "TLKIT_OFFLINE" in message and RESNET_URL in message
    assert str(no_network["checkpoints"] / "resnet18-f37072fd.pth") in message
    assert "pretrained=False" in message and "efficientnet_lite0" in message
    assert no_network["download"] == 0 and no_network["probe"] == 0


def test_an_unreachable_host_skips_the_download(no_network):
    no_network["reachable"] = False
    with pytest.raises(BackboneError, match="download.pytorch.org did not answer"):
        create_backbone("mobilenet_v3_small")
    assert no_network["download"] == 0 and no_network["probe"] == 1


def test_a_failing_download_is_tried_once(no_network):
    with pytest.raises(BackboneError, match="not available offline.*URLError") as info:
        create_backbone("resnet18", pretrained=True)
    assert RESNET_URL in str(info.value)
    assert no_network["download"] == 1


def _count_timm(monkeypatch, error: Exception | None):
    import timm

    real, calls = timm.create_model, []

    def create(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs.get("pretrained_cfg_overlay")))
        if pretrained and error is not None and not kwargs.get("pretrained_cfg_overlay"):
            raise error
        return real(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", create)
    return calls


def test_timm_offline_fails_fast_and_online_tries_once(no_network, monkeypatch):
    calls = _count_timm(monkeypatch, OSError("hub unreachable"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(BackboneError) as info:
        create_backbone("timm:test_efficientnet")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "https://huggingface.co/timm/test_efficientnet.r160_in1k" in message
    assert calls == [] and time.perf_counter() - start < 5
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(BackboneError, match="which failed.*hub unreachable"):
        create_backbone("timm:test_efficientnet", pretrained=True)
    assert [c[1] for c in calls] == [True]  # one attempt, no retries
    assert create_backbone("timm:test_efficientnet", pretrained=False).name.startswith("timm:")


def test_timm_weights_in_the_hub_cache_load_without_the_network(no_network, monkeypatch, tmp_path):
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    saved = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    repo = tmp_path / "hf" / "models--timm--test_efficientnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in saved.items()},
              str(repo / "snapshots" / "abc123" / "model.safetensors"))  # fmt: skip
    assert constants.HF_HUB_CACHE == str(tmp_path / "hf")
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    calls = _count_timm(monkeypatch, OSError("the network must not be used"))
    backbone = create_backbone("timm:test_efficientnet", pretrained=True)
    assert backbone.pretrained and len(calls) == 1 and calls[0][2] is not None
    torch.testing.assert_close(backbone.body.conv_stem.weight, saved["conv_stem.weight"])
    assert no_network["probe"] == 0
