"""Every public feature on every kind of Domain.

Rows: the features (fit, evaluate, predict, out-of-fold probabilities, confident learning on
them, backbone ranking, label-noise injection, few-labels splits, the active-learning query and
the annotation cards, the dashboard's embedding). Columns: the backings a user's data arrives
in (in-memory images, a photo folder, a CSV manifest, WebDataset shards, feature rows, token
ids), for classification and for regression. Each cell either runs, tiny (2 classes x 8 samples,
one epoch, 16 px), or is listed in ``REFUSED`` and refuses *before any training* with a message
that says why.

The folder, CSV and shards are the shared photo fixture (:func:`tlkit.testing.make_photo_folder`):
camera-size JPEGs and PNGs, a photo stored sideways with an EXIF tag, class folders with
sub-folders, non-image files beside the photos, and a CSV manifest with a float column. Its
undecodable files are the subject of the tests that say so, below.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

import tlkit
import tlkit.cross_validation as cv
from tlkit.datasets import (
    DataError,
    DomainPair,
    add_label_noise,
    few_labels,
    from_arrays,
    from_csv,
    from_folder,
    from_shards,
    from_tensors,
    pack,
)
from tlkit.notebook.active_learning import ActiveLearner
from tlkit.notebook.embedding import embedding_features
from tlkit.testing import make_photo_folder

KINDS = ("memory", "folder", "csv", "shards", "features", "tokens")
BACKBONE = {"features": "mlp", "tokens": "text_bag"}  # images: small_cnn
PER_CLASS = 8
COLOURS = np.array([[200, 50, 50], [50, 60, 210]])
TOKENS = {"vocab_size": 100, "padding_id": 0}


def _photo_folder(root, *, corrupt: int = 0):
    """The shared fixture, 2 classes x 8 photos at two camera sizes (PNGs at 800x600)."""
    return make_photo_folder(
        root, classes=2, per_class=PER_CLASS, sizes=((2048, 1536), (3000, 2000)),
        png_size=(800, 600), corrupt=corrupt, seed=0,
    )  # fmt: skip


def _images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two colour classes of noisy 16 px images: the in-memory column."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(2), PER_CLASS)
    noise = rng.integers(0, 60, (len(labels), 16, 16, 3))
    return (COLOURS[labels][:, None, None] * 0.7 + noise).clip(0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _photo_folder(tmp_path_factory.mktemp("matrix") / "photos")


@pytest.fixture(scope="module")
def domains(photos):
    classes = photos.classes
    folder = from_folder(photos.root)
    square, labels = _images()
    g = torch.Generator().manual_seed(0)
    y = torch.as_tensor(labels)
    rows = torch.randn(len(y), 5, generator=g) + 2.0 * y[:, None]
    tokens = torch.randint(1, 50, (len(y), 12), generator=g) + 50 * y[:, None]
    tokens[:, 9:] = 0  # padding
    shards = pack(folder, photos.root.parent / "shards", shard_size=6, progress=False)
    return {
        "memory": from_arrays(square, labels, classes=classes, name="memory"),
        "folder": folder,
        "csv": from_csv(photos.csv),
        "shards": from_shards(shards),
        "features": from_tensors(rows, y, classes=classes, name="rows"),
        "tokens": from_tensors(tokens, y, classes=classes, name="tokens", info=TOKENS),
    }


@pytest.fixture(scope="module")
def regression_domains(photos, domains):
    """The same samples with a number each: the fixture's float column where the data are files
    (folders named by value for the folder), a value per class otherwise."""
    by_value = photos.root.parent / "by_value"
    for name, value in zip(photos.classes, ("0.25", "0.75")):
        shutil.copytree(photos.root / name, by_value / value, dirs_exist_ok=True)
    csv = from_csv(photos.csv, label_column="value", task="regression")
    values = torch.tensor([0.25, 0.75])[domains["memory"].labels]
    return {
        "memory": from_arrays(domains["memory"].inputs, values, task="regression"),
        "folder": from_folder(by_value, task="regression"),
        "csv": csv,
        "shards": from_shards(pack(csv, photos.root.parent / "value-shards", progress=False)),
        "features": from_tensors(domains["features"].inputs, values, task="regression"),
        "tokens": from_tensors(
            domains["tokens"].inputs, values, task="regression", info=TOKENS
        ),
    }


def options(kind: str) -> dict:
    """One tiny epoch; images at 16 px; files decoded without worker processes."""
    extra = {"image_size": 16} if kind in ("memory", "folder", "csv", "shards") else {}
    return dict(batch_size=8, lr=3e-3, progress=False, seed=0, num_workers=0, **extra)


def backbone(kind: str) -> str:
    return BACKBONE.get(kind, "small_cnn")


@pytest.fixture(scope="module")
def tasks(domains):
    out = {}
    for kind, d in domains.items():
        train, test = d.split(0.25, seed=0)
        out[kind] = DomainPair(train, test, name=kind)
    return out


@pytest.fixture(scope="module")
def runs(tasks):
    return {
        k: tlkit.fit(t, backbone(k), epochs=1, mode="full", **options(k)) for k, t in tasks.items()
    }


def test_the_backings_are_what_they_say(domains):
    assert [domains[k].in_memory for k in KINDS] == [True, False, False, False, True, True]
    assert [domains[k].modality for k in KINDS] == ["image"] * 4 + ["tensor"] * 2
    assert domains["shards"].backing.kind == "WebDataset shards"
    assert domains["csv"].backing.kind == "image files"
    assert {len(d) for d in domains.values()} == {2 * PER_CLASS}


@pytest.mark.parametrize("kind", KINDS)
def test_fit_evaluate_predict(kind, tasks, runs):
    run, test = runs[kind], tasks[kind].source_test
    assert len(run.history) == 1 and 0.0 <= run.last["source_accuracy"] <= 1.0
    metrics = run.evaluate(test)
    assert metrics["confusion_matrix"].sum() == len(test)
    assert metrics["accuracy"] == pytest.approx(run.last["source_accuracy"])
    table = run.predict(test, progress=False)
    assert len(table) == len(test) and set(table["label"]) <= set(run.classes)
    assert set(run.classes) == {"chelsea", "coffee"}  # the fixture's classes, on every backing


@pytest.mark.parametrize("kind", KINDS)
def test_regression_fit_evaluate_predict(kind, regression_domains):
    domain = regression_domains[kind]
    assert domain.task == "regression" and domain.labels.dtype == torch.float32
    train, test = domain.split(0.25, seed=0)
    run = tlkit.fit(DomainPair(train, test, name=kind), backbone(kind), epochs=1, mode="full",
                    **options(kind))  # fmt: skip
    assert run.task == "regression"
    metrics = run.evaluate(test)
    assert {"mae", "rmse", "r2", "baseline_mae"} <= set(metrics)
    assert np.isfinite(metrics["mae"]) and metrics["baseline_mae"] > 0
    table = run.predict(test, progress=False)
    assert len(table) == len(test) and np.isfinite(table["prediction"]).all()
    # predictions come back in the targets' units, not standardised ones (which centre on 0):
    # after one epoch they sit near the training targets' mean (0.5 here, ~0.4 in the manifest)
    centre = float(train.labels.mean())
    assert abs(table["prediction"].mean() - centre) < 0.25, (table["prediction"], centre)


@pytest.mark.parametrize("kind", KINDS)
def test_cross_validated_probabilities_and_suspicious_labels(kind, tasks):
    task = add_label_noise(tasks[kind], "symmetric", 0.25, seed=1)
    opts = options(kind)
    probs, idx = cv.cross_validated_probabilities(task, folds=2, epochs=1, **opts)
    n = len(task.source)
    assert probs.shape == (n, 2) and torch.equal(idx, torch.arange(n))
    assert torch.allclose(probs.sum(1), torch.ones(n, dtype=probs.dtype))
    issues = cv.cross_validated_suspicious_labels(task, folds=2, epochs=1, **opts)
    assert sorted(issues.indices.tolist()) == list(range(n))
    scores = issues.precision_recall(task)
    assert scores["mislabelled"] == int((task.source.labels != task.source.clean_labels).sum())
    cleaned = issues.remove(task)
    assert len(cleaned.source) == n - len(issues)
    assert cleaned.source.backing.kind == task.source.backing.kind  # nothing was decoded


def test_cross_validation_reads_files_in_worker_processes(tasks):
    probs, idx = cv.cross_validated_probabilities(
        tasks["folder"], folds=2, epochs=1, **{**options("folder"), "num_workers": 1}
    )
    same, _ = cv.cross_validated_probabilities(tasks["folder"], folds=2, epochs=1, **options("folder"))
    assert torch.allclose(probs, same, atol=1e-5)  # workers change nothing


def test_an_unreadable_file_is_left_out_of_the_out_of_fold_probabilities(tmp_path):
    fixture = _photo_folder(tmp_path / "photos", corrupt=2)  # a cut-off JPEG, a random .png
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        photos = from_folder(fixture.root)
        broken = [photos.paths.index(str(fixture.path(rel))) for rel in fixture.corrupt]
        probs, idx = cv.cross_validated_probabilities(
            photos, folds=2, epochs=1, **options("folder")
        )
    assert len(broken) == 2 and not set(broken) & set(idx.tolist())
    assert len(idx) == len(photos) - 2 and probs.shape == (len(photos) - 2, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_rank_backbones(kind, tasks, runs):
    size = {"image_size": 16} if kind in ("memory", "folder", "csv", "shards") else {}
    ranking = tlkit.rank_backbones(
        tasks[kind],
        {"scratch": backbone(kind), "trained": runs[kind]},
        errors="raise",
        progress=False,
        num_workers=0,
        **size,
    )
    assert len(ranking) == 2 and all(np.isfinite(r["logme"]) for r in ranking)
    assert ranking["trained"]["source_classes"] == 2 and np.isfinite(ranking["trained"]["leep"])
    assert ranking["scratch"]["features"] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_label_noise_and_few_labels_read_no_sample(kind, tasks):
    task = tasks[kind]
    noisy = add_label_noise(task, "pairflip", 0.5, seed=0)
    assert noisy.source.backing is task.source.backing
    assert torch.equal(noisy.source.clean_labels, task.source.clean_labels)
    assert (noisy.source.labels != task.source.labels).any()
    few = few_labels(task, 2, seed=0)
    assert few.source.num_labelled == 4 and len(few.target) == len(task.source) - 4
    assert few.target.num_labelled == 0 and few.target.backing.kind == task.source.backing.kind


@pytest.mark.parametrize("kind", KINDS)
def test_active_learning_query_and_annotation_cards(kind, tasks):
    from tlkit.notebook.annotate import sample_widget

    learner = ActiveLearner(few_labels(tasks[kind], 2, seed=0), steps=2, **options(kind))
    assert learner.backbone == backbone(kind)
    picks = learner.query(3)
    assert len(picks) == 3 and len({p.index for p in picks}) == 3
    learner.label([p.index for p in picks], [p.label for p in picks])
    learner.retrain()
    assert [c["labelled"] for c in learner.curve] == [4, 7]
    assert learner.labelled_task().source.backing.kind.startswith(
        tasks[kind].source.backing.kind
    )
    view = sample_widget(learner.pool, picks[0].index)
    image = kind in ("memory", "folder", "csv", "shards")
    assert type(view).__name__ == ("Image" if image else "HTML")
    assert (view.value[:4] == b"\x89PNG") if image else ("tokens" in view.value or "=" in view.value)


@pytest.mark.parametrize("kind", KINDS)
def test_dashboard_embedding_features(kind, tasks, runs):
    task = tasks[kind]
    target = DomainPair(task.source, task.source_test, task.source_test.unlabelled(), name=kind)
    feats, groups = embedding_features(runs[kind], target)
    n = len(task.source_test)
    assert feats.shape == (2 * n, runs[kind].model.backbone.num_features)
    assert groups == ["source"] * n + ["target"] * n


# -- the cells that cannot apply, refused before any training -----------------------------------
REFUSED = [
    # (feature, kind, call, message)
    ("cross-validation", "tokens", "cv_small_cnn", "cannot read 'tokens', which holds token ids"),
    ("cross-validation", "features", "cv_text_bag", "holds float feature rows"),
    ("cross-validation", "folder", "cv_mlp", "which holds images"),
    ("rank_backbones", "tokens", "rank_small_cnn", "cannot read 'tokens'"),
    ("rank_backbones", "features", "rank_image_size", "image_size=16 applies to images"),
    ("active learning", "tokens", "al_small_cnn", "annotation assistant: backbone 'small_cnn'"),
    ("image augmentation", "features", "fit_augment", "works on images"),
    ("image augmentation", "tokens", "fit_augment", "works on images"),
    ("suspicious-label images", "features", "plot", "plot\\(\\) shows images"),
    ("suspicious-label images", "tokens", "plot", "plot\\(\\) shows images"),
]


@pytest.mark.parametrize(("feature", "kind", "call", "message"), REFUSED)
def test_features_that_cannot_apply_refuse_before_training(
    feature, kind, call, message, tasks, runs, monkeypatch
):
    task = tasks[kind]
    fits, steps = [], []
    real_fit = tlkit.api.fit

    class CountSteps:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer):
            steps.append(1)

    def counting_fit(*a, **kw):
        fits.append(1)
        return real_fit(*a, **kw)

    monkeypatch.setattr(cv, "fit", counting_fit)
    monkeypatch.setattr(tlkit.api, "fit", counting_fit)
    opts = options(kind)
    calls = {
        "cv_small_cnn": lambda: cv.cross_validated_suspicious_labels(
            task, backbone="small_cnn", folds=2, epochs=1, **opts
        ),
        "cv_text_bag": lambda: cv.cross_validated_probabilities(
            task, backbone="text_bag", folds=2, epochs=1, **opts
        ),
        "cv_mlp": lambda: cv.cross_validated_probabilities(
            task, backbone="mlp", folds=2, epochs=1, **opts
        ),
        "rank_small_cnn": lambda: tlkit.rank_backbones(
            task, ["text_bag", "small_cnn"], progress=False
        ),
        "rank_image_size": lambda: tlkit.rank_backbones(
            task, ["mlp"], image_size=16, progress=False
        ),
        "al_small_cnn": lambda: ActiveLearner(few_labels(task, 2), "small_cnn", **opts),
        "fit_augment": lambda: tlkit.fit(
            task, backbone(kind), epochs=1, augment="photos", observers=[CountSteps()], **opts
        ),
        "plot": lambda: runs[kind].suspicious_labels(task.source).plot(task.source),
    }
    with pytest.raises(DataError, match=message):
        calls[call]()
    assert not fits and not steps, f"{feature} on {kind} trained before refusing"



def test_the_dashboard_embeds_a_photo_folder_task(tasks, tmp_path):
    from tlkit.notebook.dashboard import Dashboard

    task = tasks["folder"]
    adapt = DomainPair(task.source, task.source_test, task.source_test.unlabelled(), name="photos")
    dash = Dashboard(
        data={"photos": adapt}, epochs=1, batch_size=8, image_size=16, num_workers=0,
        checkpoint_root=tmp_path, redraw_interval=0.0,
    )  # fmt: skip
    dash.train_button.click()
    run = dash.wait(60)
    assert dash.error.value == "" and run is not None, dash.error.value
    assert dash.confusion.png and dash.confusion.png.startswith(b"\x89PNG")  # the epoch's view
    dash.embedding_button.click()
    assert dash.error.value == "", dash.error.value
    assert dash.embedding.png and dash.embedding.png.startswith(b"\x89PNG")


@pytest.mark.parametrize("kind", ["shards", "tokens"])
def test_the_annotation_widget_shows_cards_and_accepts_in_bulk(kind, tasks):
    from tlkit.notebook.annotate import AnnotationAssistant

    learner = ActiveLearner(few_labels(tasks[kind], 2, seed=0), steps=2, **options(kind))
    ui = AnnotationAssistant(learner, batch=3)
    ui.ask()
    ui.wait(60)
    assert ui.error.value == "" and len(ui.cards) == 3, ui.error.value
    ui.cards[0].accept.click()
    assert learner.human_labels == 1
    ui.min_confidence.value = 0.5
    ui.update_preview()
    assert ui.error.value == "" and "Accept confident would label" in ui.preview.value


def test_an_unreadable_file_is_never_asked_about_nor_ranked(tmp_path):
    fixture = _photo_folder(tmp_path / "photos", corrupt=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        photos = from_folder(fixture.root)
        task = DomainPair(photos, name="photos")
        ranking = tlkit.rank_backbones(task, ["small_cnn"], image_size=16, progress=False)
        learner = ActiveLearner(few_labels(task, 2, seed=0), steps=2, **options("folder"))
        picks = learner.query(len(photos))
    assert np.isfinite(ranking[0]["logme"]) and ranking.samples == len(photos)
    unreadable = {str(fixture.path(rel)) for rel in fixture.corrupt}
    broken = [i for i, path in enumerate(learner.pool.paths) if path in unreadable]
    assert broken and not set(broken) & {p.index for p in picks}  # (few_labels may label one)
    assert len(picks) == len(learner.pool) - len(broken)


@pytest.mark.parametrize("kind", ["folder", "shards"])
def test_suspicious_labels_plot_decodes_files(kind, tasks, runs):
    import matplotlib.pyplot as plt

    fig = runs[kind].suspicious_labels(tasks[kind].source).plot(tasks[kind].source, n=4)
    try:
        shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
        assert len(shown) == 4 and all(a.ndim == 3 and a.shape[2] == 3 for a in shown)
    finally:
        plt.close(fig)


def test_concatenated_domains_keep_their_files_lazy(domains):
    from tlkit.datasets.concat import ConcatBacking, concat_domains

    folder, shards, memory = domains["folder"], domains["shards"], domains["memory"]
    joined = concat_domains([folder.subset([0, 1]), shards.subset([5])], torch.tensor([1, 1, 0]))
    assert isinstance(joined.backing, ConcatBacking) and not joined.in_memory
    assert joined.labels.tolist() == [1, 1, 0]
    assert joined.clean_labels.tolist() == [0, 0, int(shards.clean_labels[5])]
    assert torch.equal(joined.backing.load(2), shards.backing.load(5))
    assert joined.paths[:2] == folder.paths[:2] and joined.paths[2] == shards.paths[5]
    part = joined.subset([2, 0])
    assert torch.equal(part.backing.load(1), folder.backing.load(0))
    both = concat_domains([memory.subset([0]), memory.subset([3])])
    assert both.in_memory and torch.equal(both.inputs, memory.inputs[[0, 3]])
    with pytest.raises(DataError, match="must be alike"):
        concat_domains([memory, domains["features"]])
