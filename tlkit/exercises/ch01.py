"""Chapter 1 (quickstart): image size, the most frequent confusion, the dashboard."""

from __future__ import annotations

from typing import Any

from tlkit.exercises._core import Wrong, exercise, last_dashboard_record, require, require_run


@exercise(
    "1.1",
    "Native 8-pixel digits",
    needs=("test",),
    solution="""
answer = tlkit.fit(task, backbone="small_cnn", mode="full", epochs=5, image_size=8, lr=3e-3,
                   seed=0, progress=False)
print(f"8 px: {answer.evaluate(test)['accuracy']:.1%}   16 px: {result['accuracy']:.1%}")
""",
)
def _native_size(answer: Any, *, test: Any) -> None:
    run = require_run(answer)
    require(
        run.config.image_size == 8,
        "train at the digits' native size: pass image_size=8 to tlkit.fit",
    )
    accuracy = run.evaluate(test)["accuracy"]
    require(
        accuracy > 0.8,
        "this run has not learned the digits yet: use the chapter's recipe (mode='full', "
        "lr=3e-3) and five epochs",
    )


@exercise(
    "1.2",
    "The most frequent confusion",
    needs=("confusion",),
    solution="""
cm = result["confusion_matrix"].clone()
cm.fill_diagonal_(0)                            # the diagonal holds the correct predictions
answer = divmod(int(cm.argmax()), cm.shape[1])  # (true class, predicted class)
""",
)
def _confusion(answer: Any, *, confusion: Any) -> None:
    import torch

    require(
        isinstance(answer, tuple | list) and len(answer) == 2,
        "answer with a pair (true class, predicted class)",
    )
    true, pred = (int(v) for v in answer)
    cm = torch.as_tensor(confusion).clone()
    k = cm.shape[0]
    require(0 <= true < k and 0 <= pred < k, f"class ids run from 0 to {k - 1}")
    require(true != pred, "a confusion is off the diagonal: the true and predicted class differ")
    cm.fill_diagonal_(0)
    best = int(cm.max())
    if int(cm[true, pred]) == best:
        return
    require(
        int(cm[pred, true]) != best,
        "rows are the true class and columns the prediction: your pair is the other way round",
    )
    raise Wrong(
        "another pair is confused more often: zero the diagonal and take the largest remaining "
        "entry"
    )


@exercise(
    "1.3",
    "The dashboard at 8 pixels",
    solution="""
dash.image_size.value = 8        # the form's "image size" field
dash.train()                     # the Train button
dash.wait()
answer = dash
""",
)
def _dashboard(answer: Any) -> None:
    record = last_dashboard_record(answer)
    require(
        record.options.get("image_size") == 8,
        "the last run did not train at 8 pixels: set the form's image size, then Train",
    )
    require(record.run.config.image_size == 8, "retrain after changing the image size")
