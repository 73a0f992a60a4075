"""The text path end to end: a tokenizer's domain -> an LSTM by name -> pretrain on the bundled
docstrings and reuse the embedding and encoder in one call -> a saved run predicts raw strings."""

from __future__ import annotations

import pytest
import torch

import tlkit
from tlkit.backbones import create_backbone
from tlkit.datasets.text import VOCAB_SIZE

FAST = dict(batch_size=16, progress=False, seed=0)
MESSAGES = {
    "delivery": ["my parcel has not arrived yet", "the courier left the box at the wrong door",
                 "where is my order, it is a week late", "tracking says delivered but nothing came",
                 "the package arrived two days late", "delivery driver never showed up"],
    "refund": ["i want my money back for this order", "please refund the broken kettle",
               "how long does a refund take", "i returned the shoes, where is my refund",
               "charge me back, the item was faulty", "cancel the order and refund me"],
    "account": ["i cannot log in to my account", "reset my password please",
                "how do i change my email address", "my account was locked after three tries",
                "delete my account and my data", "the login page says wrong password"],
}  # fmt: skip


def messages(tokenizer):
    texts = [t for ts in MESSAGES.values() for t in ts]
    labels = [c for c, ts in MESSAGES.items() for _ in ts]
    return tokenizer.domain(texts, labels, name="messages"), texts


def small_lstm(vocab_size=VOCAB_SIZE):
    return create_backbone("text_lstm", vocab_size=vocab_size, embed_dim=16, hidden=16)


def test_a_text_run_saves_its_tokenizer_and_predicts_raw_strings(tmp_path):
    tok = tlkit.Tokenizer.fit([t for ts in MESSAGES.values() for t in ts], max_length=16)
    domain, texts = messages(tok)
    run = tlkit.fit(domain, "text_lstm", epochs=30, mode="full", lr=1e-2, **FAST)
    assert run.model.backbone.tokenizer == tok
    table = run.predict(texts, progress=False)
    assert len(table) == len(texts) and set(table["label"]) <= set(MESSAGES)
    assert (table["label"] == [c for c, ts in MESSAGES.items() for _ in ts]).mean() > 0.8
    again = tlkit.load(run.save(tmp_path / "text.pt"))
    assert again.model.backbone.tokenizer == tok
    fresh = ["where is my parcel", "refund please"]
    assert again.predict(fresh, progress=False)["label"].tolist() == (
        run.predict(fresh, progress=False)["label"].tolist()
    )
    assert torch.allclose(again.predict_proba(tok.encode(fresh)), run.predict_proba(tok.encode(fresh)))
    with pytest.raises(tlkit.datasets.DataError, match="list of strings"):
        run.predict("one text")


@pytest.mark.slow
def test_fit_two_stage_reuses_the_pretrained_embedding_and_encoder(tmp_path):
    first = tlkit.fit("docstrings-pretrain", small_lstm(), epochs=1, max_steps=20, lr=3e-3, **FAST)
    target, texts = messages(tlkit.Tokenizer(max_length=16))
    frozen = tlkit.fit_two_stage(first, target, mode="feature_extraction", target_epochs=2,
                                 lr=1e-2, **FAST)  # fmt: skip
    assert frozen.pretrain_run is first
    learned = first.model.backbone.state_dict()
    reused = frozen.model.backbone.state_dict()
    assert set(learned) == set(reused) and any("embedding" in k for k in learned)
    assert all(torch.equal(learned[k], reused[k]) for k in learned)  # embedding and LSTM
    assert frozen.model.backbone is not first.model.backbone  # stage 1's run keeps its own
    # in one call, fine-tuned: the weights move from the pretrained ones, and strings predict
    two = tlkit.fit_two_stage("docstrings-pretrain", target, small_lstm(), source_epochs=1,
                              target_epochs=3, lr=3e-3, source_options={"max_steps": 20}, **FAST)  # fmt: skip
    assert two.pretrain_run is not None and two.config.mode in ("auto", "fine_tune")
    assert len(two.predict(texts[:3], progress=False)) == 3
    again = tlkit.load(two.save(tmp_path / "two.pt"))
    assert again.predict(texts[:3], progress=False)["label"].tolist() == (
        two.predict(texts[:3], progress=False)["label"].tolist()
    )


def test_a_target_with_other_token_ids_is_refused_before_training():
    first = tlkit.fit("docstrings", small_lstm(), epochs=1, max_steps=2, **FAST)
    fitted = tlkit.Tokenizer.fit([t for ts in MESSAGES.values() for t in ts])
    target, _ = messages(fitted)
    with pytest.raises(tlkit.ConfigError, match="another tokenizer"):
        tlkit.fit_two_stage(first, target, target_epochs=1, **FAST)
    with pytest.raises(tlkit.ConfigError, match="reads feature rows or token ids"):
        tlkit.fit_two_stage(first, "digits", "small_cnn", target_epochs=1, **FAST)
