"""Beyond images: tensor domains (tabular features, token ids), their bundled examples and
backbones, trained here by a tiny hand-written loop (the engine integration comes later)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlkit.backbones import BackboneError, create_backbone, create_model
from tlkit.datasets import (
    DataError,
    DomainPair,
    few_labels,
    from_arrays,
    from_tensors,
    load,
    names,
    transforms,
    weak_augment,
)
from tlkit.datasets.text import VOCAB_SIZE, tokenize


def _fit(model, x, y, *, epochs, lr=3e-3, loss=F.cross_entropy, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(32):
            if len(idx) < 2:
                continue
            out = model(x[idx])
            step = loss(out.squeeze(-1) if loss is F.mse_loss else out, y[idx])
            opt.zero_grad()
            step.backward()
            opt.step()
    model.eval()
    return model


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# -- tabular ----------------------------------------------------------------------------------
def test_tabular_domains_are_tensor_domains():
    for name in ("wine", "breast-cancer", "diabetes"):
        assert name in names()
    wine = load("wine")
    d = wine.source
    assert d.modality == "tensor" and d.in_memory and d.inputs.dtype == torch.float32
    assert d.inputs.shape[1] == 13 and d.num_classes == 3 and d.classes[0] == "class_0"
    assert d.backbone_kwargs() == {"in_features": 13}
    assert len(d.info["feature_names"]) == 13
    assert "inputs=13" in repr(d)
    with pytest.raises(DataError, match="holds tensor inputs.*d.inputs"):
        _ = d.images
    diabetes = load("diabetes").source
    assert diabetes.task == "regression" and diabetes.labels.dtype == torch.float32
    with pytest.raises(DataError, match="only image domains pair up"):
        load("wine->digits")
    with pytest.raises(DataError, match="image_size does not apply"):
        load("wine", image_size=32)


def test_mlp_beats_the_majority_class_on_wine_and_the_mean_on_diabetes():
    wine = load("wine")
    model = create_model("mlp", wine.num_classes, **wine.source.backbone_kwargs())
    assert model.modality == "tensor" and model.backbone.num_features == 128
    x, y = wine.source.inputs, wine.source.labels
    xt, yt = wine.source_test.inputs, wine.source_test.labels
    assert torch.equal(model.prepare(xt), xt)  # no image normalisation, no resize
    _fit(model, x, y, epochs=40)
    majority = float((yt == torch.bincount(y).argmax()).float().mean())
    acc = _accuracy(model, xt, yt)
    assert acc >= 0.85 and acc > majority + 0.3, (acc, majority)

    diabetes = load("diabetes")
    tr, te = diabetes.source, diabetes.source_test
    mu, sd = tr.labels.mean(), tr.labels.std()
    reg = create_model("mlp", 1, task="regression", **tr.backbone_kwargs())
    _fit(reg, tr.inputs, (tr.labels - mu) / sd, epochs=60, lr=1e-3, loss=F.mse_loss)
    with torch.no_grad():
        pred = reg(te.inputs).squeeze(-1) * sd + mu
    mse = float(((pred - te.labels) ** 2).mean())
    baseline = float(((mu - te.labels) ** 2).mean())
    assert mse < 0.8 * baseline, (mse, baseline)  # R^2 > 0.2 (linear models reach ~0.45)


def test_from_tensors_checks_and_maps_labels():
    d = from_tensors(np.eye(4, dtype=np.float64), ["b", "a", "b", "a"])
    assert d.inputs.dtype == torch.float32 and d.classes == ("a", "b")
    assert d.labels.tolist() == [1, 0, 1, 0] and d.subset([1]).inputs.shape == (1, 4)
    with pytest.raises(DataError, match="NaN or infinite.*impute"):
        from_tensors(np.array([[1.0, np.nan], [0.0, 1.0]]), [0, 1])
    with pytest.raises(DataError, match="numeric.*tokenize"):
        from_tensors(np.array([["some text"], ["more"]]), [0, 1])
    tokens = from_tensors(tokenize(["a b", "c"]), [0, 1], info={"vocab_size": VOCAB_SIZE})
    assert tokens.inputs.dtype == torch.int64
    assert tokens.backbone_kwargs() == {"vocab_size": VOCAB_SIZE, "padding_id": 0}
    images = from_arrays(np.zeros((2, 4, 4), dtype=np.uint8), [0, 1])
    with pytest.raises(DataError, match="holds tensor inputs but the source holds image"):
        DomainPair(images, target=d.subset([0, 1]).with_classes(["0", "1"]))


def test_image_only_features_refuse_tensor_domains():
    wine = load("wine").source
    assert transforms.auto_augment(wine) == "none"
    with pytest.raises(DataError, match="works on images.*tensor inputs.*augment=False"):
        transforms.pipelines(wine, augment="photos")
    with pytest.raises(DataError, match="tensor inputs"):
        transforms.pipelines(wine, augment=transforms.train_transform(32))
    assert transforms.pipelines(wine).kind == "none"
    with pytest.raises(DataError, match=r"float batch \(B, C, H, W\)"):
        weak_augment(wine.inputs[:4])
    x, i = wine.dataset()[3]  # the dataset protocol still works: the row as it is
    assert torch.equal(x, wine.inputs[3]) and i == 3


# -- tokens and text backbones ------------------------------------------------------------------
def test_tokenize_is_stable_padded_and_truncated():
    ids = tokenize(["Return the array.", "x " * 300], max_length=8)
    assert ids.shape == (2, 8) and ids.dtype == torch.int64
    assert ids[0, 4:].tolist() == [0] * 4 and (ids[0, :4] > 0).all()  # 4 tokens, then padding
    assert (ids[1] > 0).all()  # truncated, not wrapped
    assert torch.equal(ids, tokenize(["return THE array.", "x " * 300], max_length=8))
    assert tokenize(["numpy array"], drop=["numpy"])[0, 1] == 0
    with pytest.raises(DataError, match="list of texts"):
        tokenize("one string")


@pytest.mark.parametrize("name", ["text_bag", "text_cnn"])
def test_text_backbones_shapes_padding_and_learning(name):
    g = torch.Generator().manual_seed(0)
    n, length = 240, 16
    x = torch.randint(3, 200, (n, length), generator=g)
    y = torch.arange(n) % 2
    x[y == 1, 0] = 1  # class 1 always holds token 1 (somewhere near the start)
    x[y == 0, 0] = 2
    lengths = torch.randint(4, length + 1, (n,), generator=g)
    x[torch.arange(length)[None, :] >= lengths[:, None]] = 0  # right padding
    perm = torch.randperm(n, generator=g)
    x, y = x[perm], y[perm]
    model = create_model(name, 2, vocab_size=200)
    assert model.modality == "tensor"
    with torch.no_grad():
        model.eval()
        feats = model.features(x[:4])
        assert feats.shape == (4, model.backbone.num_features)
        padded = torch.cat([x[:4], torch.zeros(4, 5, dtype=torch.long)], dim=1)
        assert torch.allclose(model.features(padded), feats, atol=1e-5)  # padding is ignored
    _fit(model, x[:160], y[:160], epochs=15, lr=5e-3)
    assert _accuracy(model, x[160:], y[160:]) >= 0.9  # chance is 0.5
    with pytest.raises(ValueError, match="token ids"):
        model(torch.rand(2, 16))


def test_backbone_factory_for_tensor_inputs():
    with pytest.raises(BackboneError, match="in_features=.*backbone_kwargs"):
        create_backbone("mlp")
    with pytest.raises(BackboneError, match="vocab_size="):
        create_backbone("text_bag")
    with pytest.raises(BackboneError, match="no pretrained weights"):
        create_backbone("mlp", in_features=3, pretrained=True)
    assert create_backbone("mlp", in_features=5).build_kwargs["in_features"] == 5

    class Tabular(nn.Module):  # a user's module: num_features, no modality attribute
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(7, 16)
            self.num_features = 16

        def forward(self, x):
            return self.net(x)

    b = create_backbone(Tabular())
    assert b.modality == "tensor" and b.num_features == 16 and b.input_size is None
    model = create_model(Tabular(), 3)
    x = torch.rand(4, 7, dtype=torch.float64)
    assert model(x).shape == (4, 3)  # float64 features cast, passed through

    class Trunk(nn.Module):  # an image module declaring num_features: checked on images
        num_features = 8

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.conv(x)

    image = create_backbone(Trunk())
    assert image.modality == "image" and image.num_features == 8

    class Lying(nn.Module):
        num_features = 5

        def __init__(self):
            super().__init__()
            self.fc = nn.Conv2d(3, 1000, 1)

        def forward(self, x):
            return self.fc(x).mean((2, 3))

    with pytest.raises(BackboneError, match="declares num_features=5.*num_classes=0"):
        create_backbone(Lying())


@pytest.mark.slow
def test_docstrings_tasks_and_two_stage_transfer():
    """Builds both text tasks from installed packages (~20-30 s on 2 cores)."""
    pair, pre = load("docstrings"), load("docstrings-pretrain")
    d = pair.source
    assert d.modality == "tensor" and d.inputs.shape[1] == 128
    assert d.classes == ("numpy", "scikit-learn", "matplotlib", "scikit-image")
    assert pre.num_classes >= 10 and all("." in c for c in pre.classes)
    kwargs = d.backbone_kwargs()
    assert (kwargs["vocab_size"], kwargs["padding_id"]) == (VOCAB_SIZE, 0)
    assert set(kwargs) == {"vocab_size", "padding_id", "tokenizer"}  # so a run predicts strings
    drop = tokenize(["numpy np sklearn matplotlib plt skimage"])
    assert not set(drop[0].tolist()) - {0} & set(d.inputs.unique().tolist())  # names removed
    test_x, test_y = pair.source_test.inputs, pair.source_test.labels
    majority = float((test_y == torch.bincount(d.labels).argmax()).float().mean())
    full = _fit(create_model("text_bag", 4, **d.backbone_kwargs()), d.inputs, d.labels, epochs=8)
    assert _accuracy(full, test_x, test_y) > majority + 0.3
    few = few_labels(pair, 10).source
    scratch = _fit(create_model("text_bag", 4, **d.backbone_kwargs()), few.inputs, few.labels,
                   epochs=30)  # fmt: skip
    source = _fit(create_model("text_bag", pre.num_classes, **d.backbone_kwargs()),
                  pre.source.inputs, pre.source.labels, epochs=8)  # fmt: skip
    tuned = _fit(create_model(source.backbone, 4), few.inputs, few.labels, epochs=30, lr=1e-3)
    assert _accuracy(tuned, test_x, test_y) > _accuracy(scratch, test_x, test_y) + 0.05
