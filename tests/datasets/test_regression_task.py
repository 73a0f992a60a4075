"""Regression as a first-class task: from arrays, feature rows, CSVs and image files, with the
targets standardised for training and every prediction and metric in the user's units."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

import tlkit
from tlkit.datasets import (
    DataError,
    DomainPair,
    from_arrays,
    from_csv,
    from_folder,
    from_tensors,
)
from tlkit.engine.metrics import regression_metrics

FAST = dict(progress=False, seed=0)


def _rows(n: int, seed: int, offset: float = 1000.0, slope: float = 50.0):
    """Features ``(n, 4)`` and a target in large units (~1000 +- 100), linear in the features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = offset + slope * (x[:, 0] - 0.5 * x[:, 1]) + torch.randn(n, generator=g)
    return x, y


def _by_sex(domain):
    sex = domain.inputs[:, 1]
    return domain.subset(torch.nonzero(sex > 0).flatten()), domain.subset(
        torch.nonzero(sex <= 0).flatten()
    )


# -- the metrics -------------------------------------------------------------------------------
def test_regression_metrics_report_r2_next_to_the_predict_the_mean_baseline():
    truth = torch.tensor([1.0, 2.0, 3.0, 6.0])
    m = regression_metrics(truth.clone(), truth)
    assert m["mae"] == 0 and m["rmse"] == 0 and m["r2"] == pytest.approx(1.0)
    assert m["baseline_mae"] == pytest.approx(float((truth - 3.0).abs().mean()))
    assert m["baseline_rmse"] == pytest.approx(float((truth - 3.0).pow(2).mean().sqrt()))
    constant = regression_metrics(torch.full((4,), 3.0), truth)
    assert constant["r2"] == pytest.approx(0.0) and constant["mae"] == m["baseline_mae"]
    worse = regression_metrics(torch.full((4,), 10.0), truth)
    assert worse["r2"] < 0


# -- target scaling ----------------------------------------------------------------------------
def test_targets_are_standardised_for_training_and_predictions_come_back_in_user_units(tmp_path):
    x, y = _rows(160, seed=0)
    xt, yt = _rows(60, seed=1)
    data = DomainPair(
        from_tensors(x, y, task="regression", name="rows"),
        from_tensors(xt, yt, task="regression", name="rows-test"),
    )
    run = tlkit.fit(data, "mlp", epochs=20, **FAST)
    scale = run.model.head.scale
    assert torch.allclose(scale.mean, y.mean().view(1), atol=1e-3)
    assert torch.allclose(scale.std, y.std().view(1), rtol=1e-3)
    pred = run.predict(xt)
    assert pred.shape == (60, 1)
    pred = pred.flatten()
    assert abs(float(pred.mean()) - float(yt.mean())) < 30
    metrics = run.evaluate(data.source_test)
    assert metrics["mae"] == pytest.approx(float((pred - yt).abs().mean()), rel=1e-4)
    assert metrics["mae"] < 0.5 * metrics["baseline_mae"] and metrics["r2"] > 0.5
    assert run.last["source_mae"] == pytest.approx(metrics["mae"], rel=1e-4)
    again = tlkit.load(run.save(tmp_path / "rows.pt"))
    assert torch.allclose(again.predict(xt).flatten(), pred)
    program = torch.export.load(run.export(tmp_path / "rows.pt2"))
    assert torch.allclose(program.module()(xt).flatten(), pred, atol=1e-3)


def test_the_loss_sees_standardised_targets(temp_strategy):
    seen = []

    class Spy:
        name = "spy_mse"
        family = "loss"
        requires_task = "regression"

        @tlkit.hookimpl
        def tlkit_supervised_loss(self, logits, targets):
            seen.append(targets.detach().clone())
            return (logits.float().view(len(logits), -1) - targets.float().view(len(targets), -1)
                    ).pow(2).mean(dim=1)  # fmt: skip

    temp_strategy(Spy())
    x, y = _rows(64, seed=0)
    tlkit.fit(from_tensors(x, y, task="regression"), "mlp", epochs=1, loss="spy_mse", **FAST)
    targets = torch.cat(seen)
    assert abs(float(targets.mean())) < 0.5 and 0.5 < float(targets.std()) < 1.5


def test_diabetes_two_stage_and_target_only_beat_the_mean_with_default_options():
    diabetes = tlkit.datasets.load("diabetes")
    a_train, b_train = _by_sex(diabetes.source)
    a_test, b_test = _by_sex(diabetes.source_test)
    target = DomainPair(b_train, b_test)
    only = tlkit.fit(target, "mlp", **FAST)
    two = tlkit.fit_two_stage(DomainPair(a_train, a_test), target, "mlp", **FAST)
    mean_mae = float((b_test.labels - b_train.labels.mean()).abs().mean())
    for run in (only, two):
        metrics = run.evaluate(b_test)
        assert metrics["mae"] < mean_mae, (metrics["mae"], mean_mae)
    longer = dict(FAST, epochs=30)
    only = tlkit.fit(target, "mlp", **longer)
    two = tlkit.fit_two_stage(DomainPair(a_train, a_test), target, "mlp", source_epochs=30,
                              target_epochs=30, **FAST)  # fmt: skip
    for run in (only, two):
        metrics = run.evaluate(b_test)
        assert metrics["r2"] > 0.2 and metrics["mae"] < 0.85 * metrics["baseline_mae"], metrics


# -- every way in ------------------------------------------------------------------------------
def test_regression_from_arrays_and_feature_rows():
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8), dtype=np.uint8)
    d = from_arrays(images, [0.5, 1.5, 2.25, 3.0, 4.0, 5.5], task="regression")
    assert d.task == "regression" and d.labels.dtype == torch.float32 and d.classes == ()
    rows = from_tensors(np.eye(3), [10.0, 20.5, 30.25], task="regression")
    assert rows.task == "regression" and rows.labels.tolist() == [10.0, 20.5, 30.25]


def _photos(tmp_path, n=8):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / name)
        rows.append({"path": name, "price": f"{100 + 7.25 * i:.2f}", "kind": "ab"[i % 2]})
    return rows


def _write_csv(path, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_from_csv_takes_task_regression_for_a_float_column(tmp_path):
    rows = _photos(tmp_path)
    file = _write_csv(tmp_path / "prices.csv", rows)
    d = from_csv(file, label_column="price", task="regression")
    assert d.task == "regression" and d.classes == () and d.labels.dtype == torch.float32
    assert d.labels.tolist() == pytest.approx([float(r["price"]) for r in rows])
    import pandas as pd

    frame = pd.read_csv(file)
    d2 = from_csv(frame, label_column="price", task="regression", root=tmp_path)
    assert torch.equal(d2.labels, d.labels)
    run = tlkit.fit(d, "small_cnn", epochs=1, batch_size=4, image_size=16, **FAST)
    table = run.predict(d)  # one epoch: near the mean, but in the targets' units (~100-150)
    assert run.task == "regression" and len(table) == len(rows)
    assert ((table["prediction"] > 50) & (table["prediction"] < 200)).all(), table


def test_regression_from_the_photo_fixture_manifest(tmp_path):
    from tlkit.testing.photos import make_photo_folder

    photos = make_photo_folder(tmp_path, classes=2, per_class=3, sizes=((320, 240),),
                               png_size=(200, 150), corrupt=0)  # fmt: skip
    with pytest.raises(DataError, match="looks like a regression target"):
        from_csv(photos.csv, label_column="value")
    d = from_csv(photos.csv, label_column="value", task="regression")
    assert d.task == "regression" and d.labels.tolist() == pytest.approx(photos.values)
    labelled = from_csv(photos.csv)  # the class column is unaffected
    assert labelled.task == "classification" and labelled.classes == tuple(sorted(photos.classes))


def test_from_folder_reads_each_folder_name_as_the_target_value(tmp_path):
    for value, shade in (("2.5", 40), ("10", 120), ("-1e1", 200), (".5", 90)):  # one per value
        (tmp_path / "ages" / value / "deep").mkdir(parents=True)
        for i in range(2):
            image = Image.new("RGB", (24, 20), (shade, shade, i * 50))
            image.save(tmp_path / "ages" / value / f"{i}.png")
        Image.new("RGB", (24, 20), (shade, 0, 0)).save(tmp_path / "ages" / value / "deep" / "x.jpg")
    (tmp_path / "ages" / ".cache").mkdir()  # hidden: left out
    Image.new("RGB", (8, 8)).save(tmp_path / "ages" / ".cache" / "0.png")
    d = from_folder(tmp_path / "ages", task="regression")
    assert d.task == "regression" and d.classes == () and len(d) == 12  # ".5" is a value
    by_value = {float(v): 3 for v in ("2.5", "10", "-1e1", ".5")}
    assert {float(v): d.labels.tolist().count(float(v)) for v in by_value} == by_value
    assert d.labels.dtype == torch.float32 and torch.equal(d.labels, d.clean_labels)
    run = tlkit.fit(d, "small_cnn", epochs=1, batch_size=4, image_size=16, **FAST)
    assert run.task == "regression" and "r2" in run.evaluate(d)
    (tmp_path / "ages" / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "ages" / "cat" / "0.png")
    with pytest.raises(DataError, match="'cat' under .* is not a number.*from_csv"):
        from_folder(tmp_path / "ages", task="regression")
    with pytest.raises(DataError, match="task='regression' reads the targets from the folder"):
        from_folder(tmp_path / "ages", labels=False, task="regression")
    with pytest.raises(DataError, match="task must be 'classification' or 'regression'"):
        from_folder(tmp_path / "ages", task="regresion")


def test_a_float_label_column_without_task_is_refused_not_turned_into_classes(tmp_path):
    rows = _photos(tmp_path)
    file = _write_csv(tmp_path / "prices.csv", rows)
    with pytest.raises(DataError, match="looks like a regression target: pass task='regression'"):
        from_csv(file, label_column="price")
    import pandas as pd

    with pytest.raises(DataError, match="task='regression'"):
        from_csv(pd.read_csv(file), label_column="price", root=tmp_path)
    names = from_csv(file, label_column="kind")  # class names still make classes
    assert names.task == "classification" and names.classes == ("a", "b")


def test_regression_targets_must_be_numbers_and_present(tmp_path):
    rows = _photos(tmp_path, n=4)
    rows[2]["price"] = "cheap"
    with pytest.raises(DataError, match="'cheap'.*number"):
        from_csv(_write_csv(tmp_path / "a.csv", rows), label_column="price", task="regression")
    rows[2]["price"] = ""
    with pytest.raises(DataError, match="row 4.*no target"):
        from_csv(_write_csv(tmp_path / "b.csv", rows), label_column="price", task="regression")
    with pytest.raises(DataError, match="task must be 'classification' or 'regression'"):
        from_csv(tmp_path / "b.csv", label_column="price", task="regresion")


# -- bad files ---------------------------------------------------------------------------------
def test_from_csv_on_a_latin1_file_names_the_encoding(tmp_path):
    rows = _photos(tmp_path, n=4)
    rows[1]["kind"] = "caf\u00e9"
    file = _write_csv(tmp_path / "latin.csv", rows, encoding="latin-1")
    with pytest.raises(DataError, match="not UTF-8.*encoding="):
        from_csv(file, label_column="kind")
    d = from_csv(file, label_column="kind", encoding="latin-1")
    assert "caf\u00e9" in d.classes


def test_from_csv_on_a_binary_file_says_it_is_not_a_csv(tmp_path):
    file = tmp_path / "photo.csv"
    Image.new("RGB", (8, 8)).save(file, format="PNG")
    with pytest.raises(DataError, match="not a text CSV"):
        from_csv(file)


def test_an_empty_or_nan_path_names_its_row(tmp_path):
    import pandas as pd

    rows = _photos(tmp_path, n=4)
    frame = pd.DataFrame(rows)
    frame.loc[2, "path"] = np.nan
    with pytest.raises(DataError, match=r"row 2 .*no path"):
        from_csv(frame, label_column="kind", root=tmp_path)
    rows[1]["path"] = ""
    with pytest.raises(DataError, match=r"row 3 .*no path"):  # the CSV's line, header = 1
        from_csv(_write_csv(tmp_path / "gap.csv", rows), label_column="kind")
