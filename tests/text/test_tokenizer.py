"""The public tokenizer: fitted on a corpus or hashed into the bundled tasks' id space, it
encodes padded id tensors, builds the domain a text run trains on, and saves as plain values."""

from __future__ import annotations

import json

import pytest
import torch

import tlkit
from tlkit.datasets import DataError
from tlkit.datasets.text import tokenize
from tlkit.tokenizer import Tokenizer, tokenizer_of

CORPUS = ["the parcel never arrived", "the parcel arrived broken", "refund my order please"]


def test_fit_ranks_words_by_count_and_reserves_padding_and_unknown():
    tok = tlkit.Tokenizer.fit(CORPUS, max_length=6)
    assert tok.kind == "vocabulary"
    assert tok.vocabulary[:3] == ["arrived", "parcel", "the"]  # count 2 each, then alphabetical
    assert tok.vocab_size == len(tok.vocabulary) + 2
    ids = tok.encode(["the parcel arrived yesterday", ""])
    assert ids.dtype == torch.int64 and ids.shape == (2, 6)
    assert ids[0].tolist() == [4, 3, 2, 1, 0, 0]  # "yesterday" is unknown (1), then padding (0)
    assert ids[1].tolist() == [0] * 6
    assert tok.encode(["a " * 50])[0].tolist() == [1] * 6  # truncated to max_length
    small = tlkit.Tokenizer.fit(CORPUS, max_vocab=2)
    assert small.vocabulary == ["arrived", "parcel"] and small.vocab_size == 4


def test_the_default_tokenizer_gives_the_bundled_tasks_ids():
    texts = ["Compute the inverse of a matrix.", "Plot y versus x as lines 2 and 3"]
    tok = tlkit.Tokenizer(max_length=128)
    assert torch.equal(tok.encode(texts), tokenize(texts))
    docs = tlkit.datasets.load("docstrings").source
    bundled = tokenizer_of(docs)
    assert bundled is not None and bundled.same_ids(tok)
    assert not bundled.same_ids(tlkit.Tokenizer.fit(CORPUS))


def test_domain_carries_labels_classes_and_the_tokenizer():
    tok = tlkit.Tokenizer.fit(CORPUS, max_length=8)
    d = tok.domain(CORPUS, ["delivery", "delivery", "refund"], name="messages")
    assert d.classes == ("delivery", "refund") and d.labels.tolist() == [0, 0, 1]
    assert d.modality == "tensor" and d.inputs.shape == (3, 8)
    kwargs = d.backbone_kwargs()
    assert kwargs["vocab_size"] == tok.vocab_size and kwargs["padding_id"] == 0
    assert Tokenizer.from_dict(kwargs["tokenizer"]) == tok
    assert tok.domain(CORPUS).num_labelled == 0
    with pytest.raises(DataError, match="3 texts but 2 labels"):
        tok.domain(CORPUS, ["a", "b"])


def test_save_load_round_trip_and_clear_errors(tmp_path):
    for tok in (tlkit.Tokenizer.fit(CORPUS, drop=["please"]), tlkit.Tokenizer(vocab_size=512)):
        again = Tokenizer.load(tok.save(tmp_path / "tok.json"))
        assert again == tok and torch.equal(again.encode(CORPUS), tok.encode(CORPUS))
        json.loads((tmp_path / "tok.json").read_text())  # plain JSON
    assert tlkit.Tokenizer.fit(CORPUS, drop=["please"]).encode(["please"])[0, 0] == 0
    with pytest.raises(DataError, match="not one string"):
        tlkit.Tokenizer().encode("one text")
    with pytest.raises(DataError, match="not one string"):
        tlkit.Tokenizer.fit("one text")
    with pytest.raises(DataError, match="no words"):
        tlkit.Tokenizer.fit(["", "  "])
    with pytest.raises(DataError, match="max_length"):
        tlkit.Tokenizer(max_length=0)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="could not read a tokenizer"):
        Tokenizer.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="not a tokenizer description"):
        Tokenizer.from_dict({"kind": "bpe"})
