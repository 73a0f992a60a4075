"""Chapter 2 (pretrained networks): nearest neighbours, more labels, the probe in the dashboard."""

from __future__ import annotations

from typing import Any

from tlkit.exercises._core import as_float, close, exercise, require, require_run

PROBE = "linear probe, ImageNet features"


@exercise(
    "2.1",
    "1-nearest neighbour on frozen features",
    needs=("runs", "train", "test"),
    solution="""
from sklearn.neighbors import KNeighborsClassifier

frozen = runs["linear probe, ImageNet features"]        # its backbone: the ImageNet weights
labelled = train.source.labelled_mask
knn = KNeighborsClassifier(1).fit(frozen.features(train.source).numpy()[labelled.numpy()],
                                  train.source.labels[labelled].numpy())
answer = knn.score(frozen.features(test).numpy(), test.labels.numpy())
print(f"1-NN on ImageNet features: {answer:.1%}   "
      f"linear probe: {acc['linear probe, ImageNet features']:.1%}   fine-tune: {ft:.1%}")
""",
)
def _knn(answer: Any, *, runs: Any, train: Any, test: Any) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    value = as_float(answer, "the 1-NN test accuracy")
    require(0 <= value <= 1, "an accuracy is a fraction between 0 and 1")
    frozen = runs[PROBE]
    labelled = train.source.labelled_mask.numpy()
    knn = KNeighborsClassifier(1).fit(
        frozen.features(train.source).numpy()[labelled], train.source.labels.numpy()[labelled]
    )
    expected = knn.score(frozen.features(test).numpy(), test.labels.numpy())
    require(
        close(value, expected, rel=0, abs=0.011),
        "not the accuracy of a 1-NN classifier on the linear-probe run's features: fit it on "
        "the labelled training images only (train.source.labelled_mask) and score it on test",
    )


@exercise(
    "2.2",
    "Four times as many labels",
    needs=("acc", "test"),
    solution="""
more = tlkit.datasets.few_labels(tlkit.datasets.load("digits-m"), k=40, seed=0)
more = replace(more, target=None, target_test=None, source_test=None)
answer = tlkit.fit(more, "efficientnet_lite0", mode="feature_extraction", epochs=100, lr=3e-3,
                   image_size=96, **common)
print(f"linear probe: {acc['linear probe, ImageNet features']:.1%} with 10 labels per class, "
      f"{answer.evaluate(test)['accuracy']:.1%} with 40; fine-tune with 10: {ft:.1%}")
""",
)
def _more_labels(answer: Any, *, acc: Any, test: Any) -> None:
    run = require_run(answer)
    require(
        run.config.mode == "feature_extraction",
        "a linear probe keeps the backbone frozen: mode='feature_extraction'",
    )
    source = run.data.source if run.data is not None else None
    require(source is not None, "train the probe with tlkit.fit on the 40-label task")
    per_class = source.num_labelled / max(1, run.data.num_classes)
    require(
        per_class == 40,
        f"the probe saw {per_class:g} labels per class; draw 40 with few_labels(..., k=40)",
    )
    accuracy = run.evaluate(test)["accuracy"]
    require(
        accuracy > float(acc[PROBE]),
        "with more labels the probe should beat the 10-label probe: use the same recipe "
        "(epochs, lr, image size) as the chapter's probe",
    )


@exercise(
    "2.3",
    "The linear probe in the dashboard",
    solution="""
dash = tlkit.dashboard(data={"digits-m, 10 labels per class": train})
dash.backbone.value = "efficientnet_lite0"
dash.mode.value = "feature_extraction"
dash.image_size.value = 96
dash.lr.value = 3e-3
answer = dash               # the form is enough; Train would run the probe
""",
)
def _probe_form(answer: Any) -> None:
    require(
        callable(getattr(answer, "options", None)),
        f"the answer should be a dashboard (tlkit.dashboard()), got {type(answer).__name__}",
    )
    options = answer.options()
    require(
        options.get("backbone") == "efficientnet_lite0",
        "pick the backbone with ImageNet weights in the form",
    )
    require(
        options.get("mode") == "feature_extraction",
        "a linear probe trains the head only: which mode keeps the backbone frozen?",
    )
    require(options.get("image_size") == 96, "use the probe's image size from the chapter")
    require(close(float(options.get("lr", 0)), 3e-3), "use the probe's learning rate")
