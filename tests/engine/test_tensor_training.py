"""Beyond images: tabular and text domains train through the same engine, save, load and export,
and image-only features refuse them with a clear error."""

from __future__ import annotations

import pytest
import torch

import tlkit
from tlkit.datasets import DataError, few_labels

FAST = dict(mode="full", lr=3e-3, batch_size=32, progress=False, seed=0)


def majority(domain) -> float:
    return float(torch.bincount(domain.labels).max()) / len(domain)


def test_tabular_classification_and_regression_beat_trivial_baselines(tmp_path):
    wine = tlkit.datasets.load("wine")
    run = tlkit.fit(wine, "mlp", epochs=30, **FAST)
    assert run.last["source_accuracy"] > majority(wine.source_test) + 0.4
    diabetes = tlkit.datasets.load("diabetes")
    reg = tlkit.fit(diabetes, "mlp", epochs=30, **FAST)
    test = diabetes.source_test.labels
    mean_mae = float((test - diabetes.source.labels.mean()).abs().mean())
    assert reg.last["source_mae"] < 0.85 * mean_mae, (reg.last["source_mae"], mean_mae)
    again = tlkit.load(reg.save(tmp_path / "diabetes.pt"))  # the MLP's width is in the file
    rows = diabetes.source_test.inputs
    assert torch.allclose(again.predict(rows), reg.predict(rows))
    program = torch.export.load(reg.export(tmp_path / "diabetes.pt2"))
    assert torch.allclose(program.module()(rows), reg.predict(rows), atol=1e-4)


def test_text_classification_and_two_stage_transfer():
    docs = tlkit.datasets.load("docstrings")
    run = tlkit.fit(docs, "text_bag", epochs=8, **FAST)
    assert run.last["source_accuracy"] > majority(docs.source_test) + 0.2
    few = few_labels(docs, k=10, seed=0)
    scratch = tlkit.fit(few, "text_bag", epochs=30, **FAST)
    pretrain = tlkit.datasets.load("docstrings-pretrain")
    vocab = docs.source.backbone_kwargs()["vocab_size"]
    assert pretrain.source.backbone_kwargs()["vocab_size"] == vocab  # one tokenizer for both
    two = tlkit.fit_two_stage(  # stage 1 trained long enough to help (text_transfer.md)
        pretrain, few, "text_bag", source_epochs=24, target_epochs=30, **FAST
    )
    assert two.last["source_accuracy"] > scratch.last["source_accuracy"], (
        two.last["source_accuracy"],
        scratch.last["source_accuracy"],
    )


def test_image_only_features_refuse_tensor_data():
    wine = tlkit.datasets.load("wine")
    with pytest.raises(DataError, match="works on images"):
        tlkit.fit(wine, "mlp", epochs=1, augment="photos", **FAST)
    semi = few_labels(wine, k=5, seed=0)
    with pytest.raises((DataError, tlkit.PluginError), match="images"):
        tlkit.fit(semi, "mlp", epochs=1, pseudo_label="fixmatch", **FAST)


def test_text_models_export_for_any_sequence_length(tmp_path):
    docs = tlkit.datasets.load("docstrings")
    run = tlkit.fit(docs, "text_bag", epochs=1, **FAST)
    program = torch.export.load(run.export(tmp_path / "text.pt2")).module()
    rows = docs.source_test.inputs[:4]
    assert torch.allclose(program(rows), run.predict_outputs(rows), atol=1e-4)
    assert program(rows[:, :32]).shape == (4, docs.num_classes)  # a shorter length works too
