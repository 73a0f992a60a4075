"""Chapter 8 (plugins): label smoothing, least confidence, the installed families."""

from __future__ import annotations

from typing import Any

from tlkit.exercises._core import exercise, instance, require


@exercise(
    "8.1",
    "Label smoothing as a loss strategy",
    solution="""
@tlkit.register
class LabelSmoothing:
    \"\"\"Cross-entropy against smoothed targets (Szegedy et al. 2016).\"\"\"

    name = "my_label_smoothing"
    family = "loss"
    requires_task = "classification"

    def __init__(self, epsilon: float = 0.1):
        if not 0 <= epsilon < 1:
            raise ValueError(f"epsilon must be in [0, 1), got {epsilon!r}")
        self.epsilon = epsilon

    @tlkit.hookimpl
    def tlkit_supervised_loss(self, logits, targets):
        log_p = F.log_softmax(logits.float(), dim=1)                           # (B, K)
        nll = -log_p.gather(1, targets.long().unsqueeze(1)).squeeze(1)         # (B,)
        return (1 - self.epsilon) * nll - self.epsilon * log_p.mean(dim=1)     # (B,)


smooth_run = tlkit.fit(task, loss="my_label_smoothing", **{**fast, "epochs": 2})
print(f"test accuracy with label smoothing: {smooth_run.last['source_accuracy']:.1%}")
tlkit.unregister("my_label_smoothing")
answer = LabelSmoothing
""",
)
def _label_smoothing(answer: Any) -> None:
    import math

    import torch
    import torch.nn.functional as F

    strategy = instance(answer, "loss", "tlkit_supervised_loss")
    require(
        isinstance(answer, type),
        "answer with the class, so that the check can build it with other epsilons",
    )
    try:
        other = answer(0.3)
    except TypeError:
        other = None
    require(other is not None, "the constructor takes epsilon: LabelSmoothing(0.3) must work")
    two = other.tlkit_supervised_loss(logits=torch.zeros(1, 2), targets=torch.tensor([1]))
    require(
        torch.allclose(torch.as_tensor(two).float(), torch.tensor([math.log(2.0)])),
        "two classes, logits (0, 0): the loss is ln 2 whatever epsilon",
    )
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=generator)
    targets = torch.randint(0, 5, (8,), generator=generator)
    ours = strategy.tlkit_supervised_loss(logits=logits, targets=targets)
    require(ours.shape == (8,), "return one loss per sample, shape (B,)")
    require(
        torch.allclose(ours.mean(), F.cross_entropy(logits, targets, label_smoothing=0.1), atol=1e-6),
        "with the default epsilon = 0.1 the mean must match cross_entropy(..., "
        "label_smoothing=0.1): the target is (1 - eps) e_y + eps / K",
    )


@exercise(
    "8.2",
    "Least confidence as a query rule",
    solution="""
class LeastConfidence:
    \"\"\"Ask about the samples whose top class is least probable.\"\"\"

    name = "my_least_confidence"
    family = "query"

    @tlkit.hookimpl
    def tlkit_query_scores(self, probs):
        return 1 - probs.max(dim=1).values                                     # (N,)


answer = LeastConfidence
""",
)
def _least_confidence(answer: Any) -> None:
    import torch

    strategy = instance(answer, "query", "tlkit_query_scores")
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.6, 0.3, 0.1]])
    scores = strategy.tlkit_query_scores(probs=probs)
    require(isinstance(scores, torch.Tensor) and scores.shape == (3,), "one score per sample")
    require(
        torch.allclose(scores.float(), 1 - probs.max(dim=1).values),
        "the score is one minus the top class's probability",
    )


@exercise(
    "8.3",
    "What is installed",
    solution="""
answer = {}
for info in tlkit.strategies():
    answer.setdefault(info.family, []).append(info.name)
print({family: len(names) for family, names in answer.items()})
""",
)
def _installed(answer: Any) -> None:
    import tlkit

    require(isinstance(answer, dict), "answer with a dict: family -> names of its strategies")
    expected: dict[str, set[str]] = {}
    for info in tlkit.strategies():
        expected.setdefault(info.family, set()).add(info.name)
    missing = sorted(set(expected) - set(answer))
    require(not missing, f"families missing: {missing}")
    unknown = sorted(set(answer) - set(expected))
    require(not unknown, f"not families of installed strategies: {unknown}")
    for family, names in expected.items():
        require(
            set(answer[family]) == names,
            f"{family}: list every strategy of that family (tlkit.strategies({family!r}))",
        )
