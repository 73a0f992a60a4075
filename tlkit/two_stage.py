"""Two-stage transfer: pretrain on a labelled source task, fine-tune on a labelled target task.

Stage 2 keeps the whole stage-1 backbone -- for text the embedding *and* the encoder -- and puts
a fresh head on it, so the tasks may differ in label set and kind. Before stage 2 starts, the
target is checked to be readable by that backbone in the way it learned: images for an image
network, the same feature width for an MLP, and for text the same token ids (a word must get the
embedding row the source run trained for it; a tokenizer fitted on other texts would scramble
them, which looks like "pretraining hurts" rather than an error).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from tlkit.backbones.base import Backbone, TransferModel, make_head
from tlkit.datasets import load as load_dataset
from tlkit.datasets.domain import Domain, DomainPair
from tlkit.errors import ConfigError
from tlkit.run import Run
from tlkit.tokenizer import Tokenizer, tokenizer_of


def fit_two_stage(
    fit: Any,
    source: DomainPair | Domain | str | Run,
    target: DomainPair | Domain | str,
    backbone: str | nn.Module = "efficientnet_lite0",
    *,
    source_epochs: int = 5,
    target_epochs: int = 5,
    source_options: dict[str, Any] | None = None,
    **options: Any,
) -> Run:
    """Pretrain on a labelled source task, then fine-tune on a labelled target task.

    The two tasks may differ in kind (regression -> classification) and in label set: stage 2
    keeps the stage-1 backbone and puts a fresh head on it. ``source`` may also be a finished
    :class:`Run` (pretrain once, fine-tune several targets). ``source_options`` override
    ``options`` for stage 1 only. The returned run is stage 2's; ``run.pretrain_run`` is
    stage 1's.

    Text: ``tlkit.fit_two_stage("docstrings-pretrain", tlkit.Tokenizer().domain(texts, labels),
    "text_lstm")`` reuses the embedding and the LSTM learned on the bundled docstrings; the
    target must use the source's token ids (``tlkit.Tokenizer()`` gives the bundled tasks'
    ids), else a :class:`ConfigError` says so. The returned run predicts raw strings.
    ``fit`` is :func:`tlkit.fit` (passed in by :func:`tlkit.api.fit_two_stage`, which users call).
    """
    if isinstance(source, Run):
        first = source
    else:
        stage1_options = {**options, **(source_options or {})}
        first = fit(source, backbone, epochs=source_epochs, **stage1_options)
    target_task = target if not isinstance(target, str) else None
    if target_task is None:
        target_task = load_dataset(target, seed=first.config.seed)
    pair = target_task if isinstance(target_task, DomainPair) else DomainPair(source=target_task)
    stage1 = first.model.backbone
    check_reusable(stage1, pair.source)
    head = make_head(pair.task, stage1.num_features, pair.num_classes, options.get("dropout", 0.0))
    body = copy.deepcopy(stage1)
    body.pretrained = True  # on the source now: mode="auto" fine-tunes it in stage 2
    tokenizer = tokenizer_of(pair.source)
    if tokenizer is not None:  # the target's own (same ids): what predict() encodes strings with
        from tlkit.backbones.text import attach_tokenizer

        attach_tokenizer(body, tokenizer)
    model = TransferModel(body, head, pair.task)
    second = fit(pair, model=model, epochs=target_epochs, **options)
    second.pretrain_run = first
    return second


def check_reusable(backbone: Backbone, target: Domain) -> None:
    """Refuse a target the stage-1 backbone cannot read as it learned to; say what to change."""
    learned = getattr(backbone, "modality", "image")
    if learned != target.modality:
        reads = "images" if learned == "image" else "feature rows or token ids"
        raise ConfigError(
            f"the pretrained backbone '{backbone.name}' reads {reads}, but the target "
            f"'{target.name}' holds {'images' if target.modality == 'image' else 'tensors'}: "
            "pretrain on data of the same kind as the target."
        )
    if learned == "image":
        return
    needs = target.backbone_kwargs()
    built = backbone.build_kwargs
    if "in_features" in needs and built.get("in_features") not in (None, needs["in_features"]):
        raise ConfigError(
            f"the pretrained '{backbone.name}' reads rows of {built['in_features']} features, the "
            f"target '{target.name}' has {needs['in_features']}: give both the same columns."
        )
    if "vocab_size" not in needs:
        return
    rows = built.get("vocab_size")
    source_tok: Tokenizer | None = getattr(backbone, "tokenizer", None)
    target_tok = tokenizer_of(target)
    if source_tok is not None and target_tok is not None and not source_tok.same_ids(target_tok):
        raise ConfigError(
            f"the target '{target.name}' was encoded by another tokenizer ({target_tok!r}) than "
            f"the one the pretrained '{backbone.name}' learned its embedding with "
            f"({source_tok!r}): a word would get another word's embedding row. Encode the target "
            "with the source's tokenizer -- source_run.model.backbone.tokenizer.domain(texts, "
            "labels); for the bundled docstrings tasks tlkit.Tokenizer() gives their ids."
        )
    if isinstance(rows, int) and int(needs["vocab_size"]) > rows:
        raise ConfigError(
            f"the target '{target.name}' has token ids up to {needs['vocab_size'] - 1} but the "
            f"pretrained '{backbone.name}' embeds {rows} ids: encode the target with the "
            "source's tokenizer."
        )


__all__ = ["check_reusable", "fit_two_stage"]
