"""Chapter 3 (two stages): a frozen source backbone, which layers moved, the dashboard."""

from __future__ import annotations

from typing import Any

from tlkit.exercises._core import (
    exercise,
    last_dashboard_record,
    require,
    require_run,
)


@exercise(
    "3.1",
    "A new head on frozen source features",
    needs=("source_run", "zero_shot"),
    solution="""
backbone = copy.deepcopy(source_run.model.backbone)
head = make_head(target.task, backbone.num_features, target.num_classes)
answer = tlkit.fit(target, model=TransferModel(backbone, head, target.task),
                   mode="feature_extraction", epochs=40, **common)
print(f"source model as is: {zero_shot:.1%}   new head on frozen source features: "
      f"{answer.last['source_accuracy']:.1%}   fine-tuned: {run.last['source_accuracy']:.1%}")
""",
)
def _frozen_head(answer: Any, *, source_run: Any, zero_shot: float) -> None:
    import torch

    run = require_run(answer)
    require(
        run.model.backbone is not source_run.model.backbone,
        "train on a copy of the stage-1 backbone (copy.deepcopy), or stage 1's model changes too",
    )
    require(
        run.config.mode == "feature_extraction",
        "train the head only: mode='feature_extraction'",
    )
    before = source_run.model.backbone.state_dict()
    after = run.model.backbone.state_dict()
    require(
        before.keys() == after.keys(),
        "start from the stage-1 backbone (source_run.model.backbone), not a new one",
    )
    require(
        all(torch.equal(before[k].float(), after[k].float()) for k in before),
        "the backbone's weights differ from stage 1's: start from a copy of "
        "source_run.model.backbone and keep it frozen",
    )
    require(
        run.last.get("source_accuracy", 0) > zero_shot,
        "the new head should beat the source model as it is: train it longer (the chapter's "
        "40 epochs)",
    )


@exercise(
    "3.2",
    "Which layers moved",
    needs=("run",),
    solution="""
before = dict(run.pretrain_run.model.backbone.named_parameters())
after = dict(run.model.backbone.named_parameters())
answer = pd.Series({name: ((after[name] - p).norm() / p.norm()).item()
                    for name, p in before.items() if p.ndim > 1})      # weights, not biases
print(answer.round(3).to_string())
""",
)
def _layer_change(answer: Any, *, run: Any) -> None:
    import pandas as pd

    require(
        isinstance(answer, pd.Series | dict),
        "answer with a pandas Series: parameter name -> relative change",
    )
    given = pd.Series(answer, dtype=float)
    before = dict(run.pretrain_run.model.backbone.named_parameters())
    after = dict(run.model.backbone.named_parameters())
    expected = pd.Series(
        {
            name: ((after[name] - p).norm() / p.norm()).item()
            for name, p in before.items()
            if p.ndim > 1
        }
    )
    extra = sorted(set(given.index) - set(before))
    require(not extra, f"not parameters of the backbone: {extra[:3]}")
    missing = [name for name in expected.index if name not in given.index]
    require(not missing, f"also compute the weight tensors {missing[:3]}")
    off = [n for n in expected.index if abs(given[n] - expected[n]) > 1e-3 * max(1, expected[n])]
    require(
        not off,
        f"{off[0] if off else ''}: compute the norm of (fine-tuned - stage 1) divided by the norm "
        "of the stage-1 weights",
    )


@exercise(
    "3.3",
    "Target labels only, from the dashboard",
    needs=("target",),
    solution="""
dash = tlkit.dashboard(data={"50 target digits": target}, backbone="small_cnn", mode="full",
                       epochs=40, image_size=16, batch_size=32, lr=3e-3)
dash.train()
dash.wait()
answer = dash
print(f"dashboard: {dash.run.last['source_accuracy']:.1%}   "
      f"tlkit.fit: {scratch.last['source_accuracy']:.1%}")
""",
)
def _dashboard(answer: Any, *, target: Any) -> None:
    import torch

    record = last_dashboard_record(answer)
    data = record.run.data
    require(
        data is not None
        and len(data.source) == len(target.source)
        and torch.equal(data.source.labels, target.source.labels),
        "train on the chapter's 50 target digits: give the dashboard data={'a name': target} "
        "and pick that name in its data field",
    )
    require(record.options.get("mode") == "full", "train every layer, as target-only did")
