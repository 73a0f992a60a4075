"""Recurrent text encoders: token ids ``(B, L)`` (int64, right-padded with 0) -> features.

``text_lstm`` and ``text_gru``: an embedding, then a (bidirectional) LSTM or GRU that reads each
text only up to its last real token -- the batch is packed (``pack_padded_sequence``), so a
sentence gets the same features whether it is padded to 10 ids or to 128, alone or beside a
longer one -- and max-pooling of the outputs over time (``pool="last"``: the final hidden
states instead). ``max_tokens=48`` reads only the first 48 ids of each text (the recurrence
costs time in proportion to the length, so this is the CPU budget knob). Both need ``vocab_size`` (``domain.backbone_kwargs()`` gives it, and the
tokenizer when the domain carries one). No pretrained weights: pretrain on a related labelled
task and fine-tune, ``tlkit.fit_two_stage("docstrings-pretrain", mine, "text_lstm")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tlkit.backbones.base import Backbone
from tlkit.backbones.text import _check_tokens, _check_vocab, attach_tokenizer

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
POOLS = ("max", "last")


def lengths_of(x: torch.Tensor, padding_id: int = 0) -> torch.Tensor:
    """Each row's length: the position after its last non-padding id (0 for all padding)."""
    real = x != padding_id
    positions = torch.arange(1, x.shape[1] + 1, device=x.device).expand_as(x)
    return (positions * real).amax(dim=1) if x.shape[1] else torch.zeros(len(x), dtype=torch.long)


class TextRNN(nn.Module):
    """Embedding -> packed LSTM/GRU -> max over time (or last states): ``(B, L) -> (B, D)``."""

    modality = "tensor"

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        hidden: int = 128,
        *,
        cell: str = "lstm",
        layers: int = 1,
        bidirectional: bool = True,
        pool: str = "max",
        padding_id: int = 0,
        dropout: float = 0.0,
        max_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.max_tokens = max_tokens
        self.padding_id = padding_id
        self.pool = pool
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_id)
        self.rnn = CELLS[cell](
            embed_dim, hidden, num_layers=layers, batch_first=True,
            bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0,
        )  # fmt: skip
        self.directions = 2 if bidirectional else 1
        self.num_features = hidden * self.directions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_tokens(x, self.vocab_size, f"text_{self.cell}")
        if self.max_tokens is not None:
            x = x[:, : self.max_tokens]
        lengths = lengths_of(x, self.padding_id)
        empty = lengths == 0
        # An all-padding row reads one padding id (a zero embedding): defined, never NaN.
        packed = pack_padded_sequence(
            self.embedding(x), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, state = self.rnn(packed)
        if self.pool == "last":
            h = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
            features = torch.cat(list(h[-self.directions :]), dim=1)
        else:
            out, _ = pad_packed_sequence(out, batch_first=True, padding_value=float("-inf"))
            features = out.amax(dim=1)
        return features.masked_fill(empty.unsqueeze(1), 0.0) if empty.any() else features


def _build(
    cell: str,
    vocab_size: int | None,
    embed_dim: int,
    hidden: int,
    layers: int,
    bidirectional: bool,
    pool: str,
    padding_id: int,
    dropout: float,
    pretrained: bool | str,
    tokenizer: Mapping[str, Any] | None,
    max_tokens: int | None,
) -> Backbone:
    from tlkit.backbones import BackboneError

    name = f"text_{cell}"
    _check_vocab(name, vocab_size, pretrained)
    if pool not in POOLS:
        raise BackboneError(f"{name}: pool must be one of {', '.join(POOLS)}, got {pool!r}.")
    for what, value in (("embed_dim", embed_dim), ("hidden", hidden), ("layers", layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BackboneError(f"{name}: {what} must be an int >= 1, got {value!r}.")
    if not 0 <= dropout < 1:
        raise BackboneError(f"{name}: dropout must be in [0, 1), got {dropout!r}.")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise BackboneError(f"{name}: max_tokens must be an int >= 1 or None, got {max_tokens!r}.")
    model = TextRNN(
        int(vocab_size), embed_dim, hidden, cell=cell, layers=layers,  # type: ignore[arg-type]
        bidirectional=bidirectional, pool=pool, padding_id=padding_id, dropout=dropout,
        max_tokens=max_tokens,
    )  # fmt: skip
    backbone = Backbone(
        model, model.num_features, name=name, groups=[model.embedding, model.rnn],
        modality="tensor",
    )  # fmt: skip
    backbone.build_kwargs = {
        "vocab_size": vocab_size, "embed_dim": embed_dim, "hidden": hidden, "layers": layers,
        "bidirectional": bidirectional, "pool": pool, "padding_id": padding_id,
        "rnn_dropout": dropout, "max_tokens": max_tokens,
    }  # fmt: skip
    attach_tokenizer(backbone, tokenizer)
    return backbone


def text_lstm(
    *,
    vocab_size: int | None = None,
    embed_dim: int = 64,
    hidden: int = 128,
    layers: int = 1,
    bidirectional: bool = True,
    pool: str = "max",
    padding_id: int = 0,
    rnn_dropout: float = 0.0,
    max_tokens: int | None = None,
    tokenizer: Mapping[str, Any] | None = None,
    pretrained: bool | str = "auto",
    input_size: int | None = None,
) -> Backbone:
    """Build the LSTM text encoder (``hidden`` units per direction; features ``2 * hidden``
    when bidirectional). ``rnn_dropout`` is between stacked layers (``layers > 1``);
    ``max_tokens`` reads only each text's first ids (a CPU budget knob, like an image size)."""
    return _build("lstm", vocab_size, embed_dim, hidden, layers, bidirectional, pool,
                  padding_id, rnn_dropout, pretrained, tokenizer, max_tokens)  # fmt: skip


def text_gru(
    *,
    vocab_size: int | None = None,
    embed_dim: int = 64,
    hidden: int = 128,
    layers: int = 1,
    bidirectional: bool = True,
    pool: str = "max",
    padding_id: int = 0,
    rnn_dropout: float = 0.0,
    max_tokens: int | None = None,
    tokenizer: Mapping[str, Any] | None = None,
    pretrained: bool | str = "auto",
    input_size: int | None = None,
) -> Backbone:
    """Build the GRU text encoder: as :func:`text_lstm`, a third fewer weights per unit."""
    return _build("gru", vocab_size, embed_dim, hidden, layers, bidirectional, pool,
                  padding_id, rnn_dropout, pretrained, tokenizer, max_tokens)  # fmt: skip
