"""Chapter 7 (annotation): another query rule, bulk accepting, a query strategy of your own."""

from __future__ import annotations

from typing import Any

from tlkit.exercises._core import exercise, instance, require

CONFIDENCES = (0.9, 0.98, 0.995)


@exercise(
    "7.1",
    "Maximum entropy sampling",
    needs=("margin",),
    solution="""
answer = simulate("max_entropy")
curve = pd.DataFrame(answer.curve).set_index("labelled")["accuracy"]
print(pd.concat([curves, curve.rename("max_entropy")], axis=1).map("{:.1%}".format))
""",
)
def _entropy(answer: Any, *, margin: Any) -> None:
    import pandas as pd

    require(
        hasattr(answer, "curve") and hasattr(answer, "query_name"),
        "answer with the learner that simulate(...) returns",
    )
    require(answer.query_name == "max_entropy", "simulate with the 'max_entropy' query strategy")
    curve = pd.DataFrame(answer.curve).set_index("labelled")["accuracy"]
    require(
        list(curve.index) == list(margin.index),
        "use the chapter's simulate (same start, same rounds) so the curves line up",
    )
    require(
        abs(curve.iloc[0] - margin.iloc[0]) < 1e-9,
        "the first model must be the same as margin's: same start, same settings",
    )


@exercise(
    "7.2",
    "Preview before accepting",
    needs=("learner",),
    solution="""
fresh = simulate("margin")
clean = fresh.pool.clean_labels
answer = {}
for c in (0.9, 0.98, 0.995):
    picks = fresh.preview_accept(c)
    right = sum(int(clean[p.index]) == p.label for p in picks) / max(1, len(picks))
    answer[c] = (len(picks), right)
    print(f"confidence >= {c}: {len(picks):4d} suggestions, {right:.1%} right")
""",
)
def _preview(answer: Any, *, learner: Any) -> None:
    require(isinstance(answer, dict), "answer with a dict: confidence -> (count, share right)")
    require(
        learner.accepted_labels == 0,
        "preview only: this learner has accepted suggestions; start a fresh one",
    )
    clean = learner.pool.clean_labels
    for c in CONFIDENCES:
        key = [k for k in answer if abs(float(k) - c) < 1e-12]
        require(key, f"add the confidence {c}")
        value = answer[key[0]]
        require(
            isinstance(value, tuple | list) and len(value) == 2,
            f"{c}: give a pair (number of suggestions, share of them right)",
        )
        picks = learner.preview_accept(c)
        right = sum(int(clean[p.index]) == p.label for p in picks) / max(1, len(picks))
        require(int(value[0]) == len(picks), f"{c}: count the suggestions preview_accept({c}) makes")
        require(
            abs(float(value[1]) - right) < 1e-6,
            f"{c}: the share of those suggestions whose label matches pool.clean_labels",
        )


@exercise(
    "7.3",
    "The margin rule as a query strategy",
    solution="""
class MyMargin:
    \"\"\"Ask about the samples whose two most probable classes are closest.\"\"\"

    name = "my_margin"
    family = "query"

    @tlkit.hookimpl
    def tlkit_query_scores(self, probs):
        top2 = probs.topk(2, dim=1).values                                  # (N, 2)
        return -(top2[:, 0] - top2[:, 1])                                   # (N,) small margin first


answer = MyMargin
""",
)
def _margin(answer: Any) -> None:
    import torch

    strategy = instance(answer, "query", "tlkit_query_scores")
    generator = torch.Generator().manual_seed(0)
    probs = (torch.randn(20, 5, generator=generator) * 2).softmax(dim=1)
    scores = strategy.tlkit_query_scores(probs=probs)
    require(isinstance(scores, torch.Tensor), "return a tensor of scores")
    require(scores.shape == (20,), f"one score per sample, shape (N,), not {tuple(scores.shape)}")
    top2 = probs.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    order = scores.float().argsort(descending=True)
    require(
        torch.equal(order, margin.argsort()),
        "higher score = ask first: the smaller the gap between the two most probable classes, "
        "the higher the score",
    )
