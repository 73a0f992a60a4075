"""Recurrent text encoders by name, padding-aware; a user's own module on token ids and on
feature rows, with the feature size found from the data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tlkit
from tlkit.backbones import BackboneError, create_backbone, create_model, list_backbones
from tlkit.backbones.recurrent import lengths_of
from tlkit.datasets import from_tensors

FAST = dict(mode="full", lr=3e-3, batch_size=16, progress=False, seed=0)


@pytest.mark.parametrize("name", ["text_lstm", "text_gru"])
@pytest.mark.parametrize("pool", ["max", "last"])
def test_padding_does_not_change_a_sentence_features(name, pool):
    torch.manual_seed(0)
    backbone = create_backbone(name, vocab_size=50, embed_dim=8, hidden=6, pool=pool).eval()
    assert name in list_backbones() and backbone.modality == "tensor"
    assert backbone.num_features == 12  # bidirectional: two directions of 6
    sentence = torch.tensor([[7, 3, 9, 4]])
    alone = backbone(sentence)
    padded = backbone(torch.cat([sentence, torch.zeros(1, 20, dtype=torch.long)], dim=1))
    longer = torch.tensor([[5] * 24])
    beside = backbone(torch.cat([torch.cat([sentence, torch.zeros(1, 20, dtype=torch.long)], 1),
                                 longer]))  # fmt: skip
    assert torch.allclose(alone, padded, atol=1e-6) and torch.allclose(alone, beside[:1], atol=1e-6)
    # the ids themselves matter: a different word gives different features
    assert not torch.allclose(alone, backbone(torch.tensor([[7, 3, 8, 4]])), atol=1e-4)
    empty = backbone(torch.zeros(2, 5, dtype=torch.long))  # all padding: defined, finite
    assert torch.isfinite(empty).all()


def test_lengths_count_up_to_the_last_real_token():
    x = torch.tensor([[3, 0, 4, 0, 0], [0, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    assert lengths_of(x).tolist() == [3, 0, 5]


def test_recurrent_builders_refuse_bad_arguments():
    with pytest.raises(BackboneError, match="needs vocab_size"):
        create_backbone("text_lstm")
    with pytest.raises(BackboneError, match="no pretrained weights"):
        create_backbone("text_gru", vocab_size=10, pretrained=True)
    with pytest.raises(BackboneError, match="pool must be one of"):
        create_backbone("text_lstm", vocab_size=10, pool="mean")
    with pytest.raises(BackboneError, match="hidden must be"):
        create_backbone("text_lstm", vocab_size=10, hidden=0)
    with pytest.raises(ValueError, match="int64 token ids"):
        create_backbone("text_lstm", vocab_size=10)(torch.zeros(2, 3))
    tok = tlkit.Tokenizer.fit(["a b c d"])
    with pytest.raises(BackboneError, match="vocab_size=6"):
        create_backbone("text_lstm", vocab_size=3, tokenizer=tok.to_dict())


class MyLSTM(nn.Module):
    """What a practitioner writes: no num_features, no modality, returns (B, 2 * hidden)."""

    def __init__(self, vocab_size: int = 40, hidden: int = 10) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, hidden, batch_first=True)

    def forward(self, x):
        out, (h, _) = self.lstm(self.embedding(x))
        return torch.cat([out.amax(dim=1), h[-1]], dim=1)


class MyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 7), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def _separable(kind: str, n: int = 48):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    if kind == "tokens":
        x = torch.randint(3, 40, (n, 6), generator=g)
        x[:, 0] = 1 + y  # the first word says the class
        x[::3, 4:] = 0  # some padding
        return from_tensors(x, y, classes=["a", "b"], info={"vocab_size": 40, "padding_id": 0})
    x = torch.randn(n, 5, generator=g) + 2.0 * y[:, None].float()
    return from_tensors(x, y, classes=["a", "b"])


@pytest.mark.parametrize("kind, module", [("tokens", MyLSTM), ("features", MyMLP)])
def test_a_users_own_module_trains_on_tensor_rows(kind, module):
    domain = _separable(kind)
    run = tlkit.fit(domain, backbone=module(), epochs=25, **{**FAST, "lr": 1e-2})
    assert run.model.backbone.modality == "tensor"
    assert run.model.backbone.num_features == (20 if kind == "tokens" else 7)
    assert (run.predict(domain.inputs) == domain.labels).float().mean() > 0.9


def test_create_model_wraps_a_module_for_the_data_it_reads():
    model = create_model(MyLSTM(), 3, vocab_size=40, padding_id=0)
    assert model.backbone.num_features == 20 and model.modality == "tensor"
    assert model(torch.tensor([[1, 2, 0]])).shape == (1, 3)
    tok = tlkit.Tokenizer(vocab_size=40)
    model = create_model(MyLSTM(), 2, vocab_size=40, tokenizer=tok.to_dict())
    assert model.backbone.tokenizer == tok

    class Broken(nn.Module):
        def forward(self, x):
            return self.missing(x)

    with pytest.raises(BackboneError, match="dummy batch of token ids"):
        create_model(Broken(), 2, vocab_size=40)

    class Pair(MyLSTM):
        def forward(self, x):
            return self.lstm(self.embedding(x))

    with pytest.raises(BackboneError, match="returned tuple"):
        create_model(Pair(), 2, vocab_size=40)


def test_max_tokens_reads_only_the_first_ids():
    torch.manual_seed(0)
    short = create_backbone("text_gru", vocab_size=30, embed_dim=4, hidden=4, max_tokens=3).eval()
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = torch.tensor([[5, 6, 7, 1, 2]])
    assert torch.allclose(short(a), short(b))  # ids after the third are not read
    full = create_backbone("text_gru", vocab_size=30, embed_dim=4, hidden=4).eval()
    assert not torch.allclose(full(a), full(b))
    assert short.build_kwargs["max_tokens"] == 3
    with pytest.raises(BackboneError, match="max_tokens"):
        create_backbone("text_lstm", vocab_size=30, max_tokens=0)
