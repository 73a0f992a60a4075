"""Small text encoders over token ids ``(B, L)`` (int64, padding id 0) -> features ``(B, D)``.

* ``text_bag`` -- an ``EmbeddingBag`` (mean of the token embeddings, padding ignored) and one
  hidden layer: fastText's recipe (Joulin et al. 2017), fast on a CPU and a strong baseline for
  topic-like tasks such as "which library is this docstring from".
* ``text_cnn`` -- embeddings, 1-D convolutions of widths 3/4/5 and max-pooling over time (Kim
  2014): sees word order, a little slower.

Both need ``vocab_size`` (the id range of the tokeniser; ``tlkit.datasets.text.VOCAB_SIZE`` for
the bundled tasks, and ``domain.backbone_kwargs()`` gives it). No pretrained weights: pretrain on
a related labelled task (``docstrings-pretrain``) and fine-tune -- the two-stage recipe. The
recurrent encoders ``text_lstm`` / ``text_gru`` are in :mod:`tlkit.backbones.recurrent`; the
tokenizer a backbone was built with (:class:`tlkit.Tokenizer`) stays on it as ``.tokenizer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlkit.backbones.base import Backbone


def _check_tokens(x: torch.Tensor, vocab_size: int, who: str) -> torch.Tensor:
    if x.ndim != 2 or x.is_floating_point():
        raise ValueError(
            f"{who} expects int64 token ids (B, L), got {x.dtype} {tuple(x.shape)}; tokenise "
            "text with tlkit.Tokenizer (tok.encode(texts), or tok.domain(texts, labels))."
        )
    return x.long()


class TextBag(nn.Module):
    """Mean token embedding (padding excluded) -> Linear -> ReLU: ``(B, L) -> (B, hidden)``."""

    modality = "tensor"

    def __init__(
        self, vocab_size: int, embed_dim: int = 64, hidden: int = 128, padding_id: int = 0
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=padding_id)
        self.hidden = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU())
        self.num_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_tokens(x, self.vocab_size, "text_bag")
        return self.hidden(self.embedding(x))


class TextCNN(nn.Module):
    """Embeddings -> Conv1d (widths 3, 4, 5) -> ReLU -> max over time -> concat."""

    modality = "tensor"

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        channels: int = 64,
        widths: tuple[int, ...] = (3, 4, 5),
        padding_id: int = 0,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.padding_id = padding_id
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_id)
        self.convs = nn.ModuleList(
            nn.Conv1d(embed_dim, channels, w, padding=w // 2) for w in widths
        )
        self.num_features = channels * len(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_tokens(x, self.vocab_size, "text_cnn")
        pad = (x == self.padding_id).unsqueeze(1)  # (B, 1, L)
        e = self.embedding(x).transpose(1, 2)  # (B, E, L)
        pooled = []
        for conv in self.convs:
            h = F.relu(conv(e))[..., : x.shape[1]]  # (B, C, L)
            h = h.masked_fill(pad, float("-inf")) if pad.any() else h
            h = h.amax(dim=2)
            pooled.append(torch.where(torch.isfinite(h), h, torch.zeros_like(h)))  # all-padding
        return torch.cat(pooled, dim=1)


def _check_vocab(name: str, vocab_size: object, pretrained: object) -> None:
    from tlkit.backbones import BackboneError

    if pretrained is True:
        raise BackboneError(
            f"{name} has no pretrained weights; pass pretrained=False, or pretrain it on a "
            "related task first (e.g. 'docstrings-pretrain') and load those weights with weights=."
        )
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise BackboneError(
            f"{name} needs vocab_size= (the token id range, e.g. "
            f"tlkit.datasets.text.VOCAB_SIZE; domain.backbone_kwargs() gives it), got "
            f"{vocab_size!r}."
        )


def attach_tokenizer(backbone: Backbone, tokenizer: Any) -> None:
    """Keep the tokenizer that made the backbone's ids (a :class:`~tlkit.tokenizer.Tokenizer`
    or its ``to_dict()``) on the backbone and in its rebuild arguments, so a saved run
    predicts raw strings after ``tlkit.load``."""
    from tlkit.backbones import BackboneError
    from tlkit.tokenizer import Tokenizer

    if tokenizer is None:
        return
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_dict(tokenizer)
    vocab = backbone.build_kwargs.get("vocab_size")
    if isinstance(vocab, int) and tok.vocab_size > vocab:
        raise BackboneError(
            f"{backbone.name}: the tokenizer gives ids up to {tok.vocab_size - 1} but the "
            f"embedding has vocab_size={vocab} rows; build it with vocab_size={tok.vocab_size}."
        )
    backbone.tokenizer = tok
    backbone.build_kwargs["tokenizer"] = tok.to_dict()


def text_bag(
    *,
    vocab_size: int | None = None,
    embed_dim: int = 64,
    hidden: int = 128,
    padding_id: int = 0,
    tokenizer: Mapping[str, Any] | None = None,
    pretrained: bool | str = "auto",
    input_size: int | None = None,
) -> Backbone:
    """Build the embedding-bag text encoder."""
    _check_vocab("text_bag", vocab_size, pretrained)
    model = TextBag(int(vocab_size), embed_dim, hidden, padding_id)  # type: ignore[arg-type]
    backbone = Backbone(
        model, model.num_features, name="text_bag", groups=[model.embedding, model.hidden],
        modality="tensor",
    )  # fmt: skip
    backbone.build_kwargs = {"vocab_size": vocab_size, "embed_dim": embed_dim, "hidden": hidden,
                             "padding_id": padding_id}  # fmt: skip
    attach_tokenizer(backbone, tokenizer)
    return backbone


def text_cnn(
    *,
    vocab_size: int | None = None,
    embed_dim: int = 64,
    channels: int = 64,
    padding_id: int = 0,
    tokenizer: Mapping[str, Any] | None = None,
    pretrained: bool | str = "auto",
    input_size: int | None = None,
) -> Backbone:
    """Build the convolutional text encoder."""
    _check_vocab("text_cnn", vocab_size, pretrained)
    model = TextCNN(int(vocab_size), embed_dim, channels, padding_id=padding_id)  # type: ignore[arg-type]
    backbone = Backbone(
        model, model.num_features, name="text_cnn", groups=[model.embedding, model.convs],
        modality="tensor",
    )  # fmt: skip
    backbone.build_kwargs = {"vocab_size": vocab_size, "embed_dim": embed_dim,
                             "channels": channels, "padding_id": padding_id}  # fmt: skip
    attach_tokenizer(backbone, tokenizer)
    return backbone
