"""Backbones: the offline ImageNet EfficientNet-Lite0, the small CNN, torchvision/timm families,
module wrapping, local checkpoints and the errors users see. Offline: nothing here downloads."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlkit.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneError,
    ClassificationHead,
    RegressionHead,
    TransferModel,
    create_backbone,
    create_model,
    efficientnet_lite0_imagenet,
    list_backbones,
)


def assert_groups_partition(backbone: Backbone) -> list[list[nn.Parameter]]:
    """Every body parameter lands in exactly one layer group."""
    groups = backbone.layer_groups()
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in backbone.body.parameters()}
    return groups


# -- EfficientNet-Lite0 (offline ImageNet) ----------------------------------------------------


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return create_backbone("efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def lite0_imagenet() -> nn.Module:
    return efficientnet_lite0_imagenet()


def photo(img: np.ndarray, size: int = 224) -> torch.Tensor:
    """uint8 HWC photo -> float (3, size, size) in [0, 1]: centre square crop, antialiased resize."""
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    h, w = x.shape[1:]
    s = min(h, w)
    x = x[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True)[0]


def normalise(x: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    return (x - backbone.mean) / backbone.std


def test_lite0_classifies_skimage_photos(lite0: Backbone, lite0_imagenet: nn.Module) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    x = normalise(torch.stack([photo(skimage_data.chelsea()), photo(skimage_data.coffee())]), lite0)
    with torch.no_grad():
        top1 = lite0_imagenet(x).argmax(1).tolist()
        features = lite0(x)
        pre_logits = lite0_imagenet.forward_head(
            lite0_imagenet.forward_features(x), pre_logits=True
        )
    assert 281 <= top1[0] <= 285, f"chelsea should be a cat, got class {top1[0]}"
    assert top1[1] in (967, 968), f"coffee should be espresso/cup, got class {top1[1]}"
    assert features.shape == (2, 1280)
    # The feature backbone holds exactly the classifier's body weights.
    torch.testing.assert_close(features, pre_logits)


def test_lite0_normalisation_matches_stem_batchnorm_statistics(lite0_imagenet: nn.Module) -> None:
    """The weights were trained on (x - 127) / 128: with that, the stem's outputs on photos have
    the statistics its BatchNorm saw; with ImageNet mean/std they do not (both get the cat)."""
    skimage_data = pytest.importorskip("skimage.data")
    from sklearn.datasets import load_sample_images

    imgs = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.astronaut()]
    imgs += list(load_sample_images().images)
    x = torch.stack([photo(i) for i in imgs])
    backbone = create_backbone("efficientnet_lite0", pretrained=False)
    bn = lite0_imagenet.bn1

    def median_kl(mean: torch.Tensor, std: torch.Tensor) -> float:
        with torch.no_grad():
            y = lite0_imagenet.conv_stem((x - mean) / std)
        mu, var = y.mean((0, 2, 3)), y.var((0, 2, 3))
        rm, rv = bn.running_mean, bn.running_var + bn.eps
        kl = 0.5 * (torch.log(rv / var) + (var + (mu - rm) ** 2) / rv - 1)
        return float(kl[var > 1e-6].median())

    ours = median_kl(backbone.mean, backbone.std)
    imagenet = median_kl(
        torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    )
    assert ours < 0.5 * imagenet, (ours, imagenet)


def test_lite0_transfer_model_on_grayscale_uint8(lite0: Backbone) -> None:
    model = create_model(lite0, num_classes=3)
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        out = model.eval()(images)
    assert out.shape == (2, 3)
    assert model.backbone.input_size == 224 and model.backbone.pretrained


def test_lite0_groups_and_input_size() -> None:
    backbone = create_backbone("efficientnet_lite0", pretrained=False, input_size=64)
    assert backbone.input_size == 64 and not backbone.pretrained
    groups = assert_groups_partition(backbone)
    assert len(groups) == 4
    first = {id(p) for p in backbone.body.conv_stem.parameters()}
    last = {id(p) for p in backbone.body.conv_head.parameters()}
    assert first <= {id(p) for p in groups[0]} and last <= {id(p) for p in groups[-1]}


def test_lite0_mapping_is_one_to_one_and_checks_shapes() -> None:
    import timm

    from tlkit.backbones.efficientnet import map_state_dict, package_state_dict

    source = package_state_dict()
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    mapped = map_state_dict(source, target)
    assert list(mapped) == list(target)
    assert [v.shape for v in mapped.values()] == [v.shape for v in target.values()]
    assert all(a is b for a, b in zip(mapped.values(), source.values(), strict=True))

    corrupted = dict(source)
    key = list(corrupted)[10]
    corrupted[key] = torch.zeros(7, 7)
    with pytest.raises(BackboneError, match=key.replace(".", r"\.")):
        map_state_dict(corrupted, target)
    with pytest.raises(BackboneError, match="296 tensors|295 tensors"):
        map_state_dict(dict(list(source.items())[:-1]), target)


# -- small_cnn --------------------------------------------------------------------------------


def test_small_cnn() -> None:
    backbone = create_backbone("small_cnn")
    assert not backbone.pretrained and backbone.input_size == 32 and backbone.num_features == 128
    assert backbone(torch.randn(4, 3, 32, 32)).shape == (4, 128)
    groups = assert_groups_partition(backbone)
    assert len(groups) == 3
    with pytest.raises(BackboneError, match="no pretrained weights.*pretrained=False"):
        create_backbone("small_cnn", pretrained=True)


def test_create_model_heads_and_checks() -> None:
    model = create_model("small_cnn", num_classes=5, dropout=0.2)
    assert isinstance(model, TransferModel) and isinstance(model.head, ClassificationHead)
    assert model(torch.rand(3, 3, 20, 20)).shape == (3, 5)
    reg = create_model("small_cnn", num_classes=2, task="regression")
    assert isinstance(reg.head, RegressionHead) and reg(torch.rand(3, 1, 32, 32)).shape == (3, 2)
    for bad in (0, -1):
        with pytest.raises(BackboneError, match="num_classes"):
            create_model("small_cnn", num_classes=bad)
    with pytest.raises(BackboneError, match="task"):
        create_model("small_cnn", task="segmentation")
    with pytest.raises(BackboneError, match="pretrained"):
        create_backbone("small_cnn", pretrained="yes")


# -- names --------------------------------------------------------------------------------------


def test_list_and_unknown_names() -> None:
    names = list_backbones()
    assert {"efficientnet_lite0", "small_cnn", "resnet18", "timm:<name>"} <= set(names)
    with pytest.raises(BackboneError) as info:
        create_backbone("resnet19")
    message = str(info.value)
    assert "'resnet18'" in message  # close match
    assert "efficientnet_lite0" in message and "small_cnn" in message and "timm:" in message
    assert "torchvision" in message
    with pytest.raises(BackboneError, match="timm:convnext_nano"):
        create_backbone("convnext_nano")  # a timm-only name: point at the prefix
    with pytest.raises(BackboneError, match="unknown timm model"):
        create_backbone("timm:no_such_model")


# -- torchvision ------------------------------------------------------------------------------


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and a network that fails, so nothing can be downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    from tlkit.backbones import offline

    monkeypatch.setattr(offline, "reachable", lambda *a, **k: True)  # so the download is tried
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_torchvision_random_init_and_prefix(empty_hub) -> None:
    backbone = create_backbone("torchvision:resnet18", pretrained=False)
    assert backbone.name == "resnet18" and backbone.num_features == 512
    assert backbone.input_size == 224 and tuple(backbone.mean.flatten()) == pytest.approx(
        IMAGENET_MEAN
    )
    assert backbone.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 512)
    groups = assert_groups_partition(backbone)
    assert len(groups) == 4
    assert {id(p) for p in backbone.body.layer4.parameters()} == {id(p) for p in groups[-1]}
    assert {id(p) for p in backbone.body.conv1.parameters()} <= {id(p) for p in groups[0]}

    mobile = create_backbone("mobilenet_v3_small", pretrained=False)
    assert mobile.num_features == 1024  # keeps the pretrained 576 -> 1024 layer
    assert mobile.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 1024)
    assert len(assert_groups_partition(mobile)) == 4


def test_torchvision_pretrained_offline_error(empty_hub) -> None:
    with pytest.raises(BackboneError) as info:
        create_backbone("resnet18")  # "auto" means pretrained for torchvision
    message = str(info.value)
    assert "not available offline" in message
    assert str(empty_hub / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "pretrained=False" in message


def test_torchvision_pretrained_from_cache(empty_hub) -> None:
    from torchvision.models import resnet18

    saved = resnet18().state_dict()
    empty_hub.mkdir(parents=True)
    torch.save(saved, empty_hub / "resnet18-f37072fd.pth")
    backbone = create_backbone("resnet18", pretrained=True)
    assert backbone.pretrained
    for key, value in backbone.body.state_dict().items():
        torch.testing.assert_close(value, saved[key])

    # The same full-model file as weights=: the dropped fc.* keys are ignored, nothing downloads.
    local = create_backbone("resnet18", weights=empty_hub / "resnet18-f37072fd.pth")
    torch.testing.assert_close(local.body.conv1.weight, saved["conv1.weight"])

    (empty_hub / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="unreadable"):
        create_backbone("resnet18", pretrained=True)


# -- timm -----------------------------------------------------------------------------------------


def test_timm_random_init() -> None:
    backbone = create_backbone("timm:test_efficientnet", pretrained=False)
    assert backbone.name == "timm:test_efficientnet"
    assert backbone.input_size == 160  # from pretrained_cfg
    out = backbone.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, backbone.num_features)
    assert len(assert_groups_partition(backbone)) == 4


def test_timm_pretrained_offline_error(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(BackboneError, match="not available offline.*pretrained=False"):
        create_backbone("timm:test_efficientnet", pretrained=True)


# -- modules ------------------------------------------------------------------------------------


def test_wrap_module_infers_features() -> None:
    flat = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    backbone = create_backbone(flat)
    assert backbone.num_features == 32 and backbone.input_size is None
    assert not backbone.pretrained
    assert backbone(torch.randn(3, 3, 16, 16)).shape == (3, 32)

    trunk = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU())  # feature maps: pooled
    backbone = create_backbone(trunk, input_size=40)
    assert backbone.num_features == 6 and backbone.input_size == 40
    assert backbone(torch.randn(2, 3, 40, 40)).shape == (2, 6)
    model = create_model(trunk, num_classes=4)
    assert model(torch.rand(2, 1, 12, 12)).shape == (2, 4)


def test_wrap_module_rejects_bad_outputs() -> None:
    class Tokens(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(2)  # (B, C, H*W)

    with pytest.raises(BackboneError, match="feature maps"):
        create_backbone(Tokens())
    with pytest.raises(BackboneError, match="dummy"):
        create_backbone(nn.Linear(5, 2))


# -- local checkpoints ----------------------------------------------------------------------------


def test_weights_file_loads_state_dicts(tmp_path) -> None:
    source = create_backbone("small_cnn")
    path = tmp_path / "body.pt"
    torch.save(source.body.state_dict(), path)
    loaded = create_backbone("small_cnn", weights=path)
    assert loaded.pretrained
    for key, value in loaded.body.state_dict().items():
        torch.testing.assert_close(value, source.body.state_dict()[key])

    # A whole TransferModel saved under "model" (the engine's and many trainers' format).
    model = create_model("small_cnn", num_classes=3)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    loaded = create_backbone("small_cnn", weights=tmp_path / "ckpt.pt")
    first = "blocks.0.0.weight"
    torch.testing.assert_close(
        loaded.body.state_dict()[first], model.backbone.body.state_dict()[first]
    )

    # A plain module's own checkpoint, loaded before pooling is appended.
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    torch.save(trunk.state_dict(), tmp_path / "trunk.pt")
    wrapped = create_backbone(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), weights=tmp_path / "trunk.pt"
    )
    torch.testing.assert_close(wrapped.body[0][0].weight, trunk[0].weight)


def test_weights_file_errors(tmp_path) -> None:
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone("small_cnn", weights=tmp_path / "missing.pt")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BackboneError, match="corrupt.pt"):
        create_backbone("small_cnn", weights=corrupt)

    truncated = tmp_path / "truncated.pt"
    torch.save(create_backbone("small_cnn").body.state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(BackboneError, match="truncated.pt"):
        create_backbone("small_cnn", weights=truncated)

    other = tmp_path / "other.pt"
    torch.save(nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(BackboneError, match="other.pt.*missing keys.*blocks.0.0.weight"):
        create_backbone("small_cnn", weights=other)

    wider = tmp_path / "wider.pt"
    torch.save(create_backbone("small_cnn", widths=(16, 64, 128)).body.state_dict(), wider)
    with pytest.raises(BackboneError, match=r"shape mismatches.*blocks\.0\.0\.weight"):
        create_backbone("small_cnn", weights=wider)

    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(BackboneError, match="not a state dict"):
        create_backbone("small_cnn", weights=not_weights)


def test_prepare_accepts_float64_and_antialiases_when_shrinking():
    from tlkit.backbones import create_model

    model = create_model("small_cnn", 3, pretrained=False)
    x64 = torch.rand(2, 3, 40, 40, dtype=torch.float64)
    assert model(x64).dtype == torch.float32
    stripes = torch.zeros(1, 1, 64, 64)
    stripes[..., ::2] = 1.0  # finest possible stripes: an antialiased shrink averages them out
    prepared = model.prepare(stripes) * model.backbone.std + model.backbone.mean
    assert prepared.std() < 0.1
