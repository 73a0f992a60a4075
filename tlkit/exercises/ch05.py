"""Chapter 5 (semi-supervised): thresholds, another labelled set, a pseudo-label rule."""

from __future__ import annotations

import math
from typing import Any

from tlkit.exercises._core import exercise, instance, require, require_run

TAUS = (0.5, 0.8, 0.95, 0.99)


@exercise(
    "5.1",
    "What a threshold admits",
    needs=("runs", "pool"),
    solution="""
proba = runs["supervised only"].predict_proba(pool)
confidence, guess = proba.max(dim=1)
rows = {}
for tau in (0.5, 0.8, 0.95, 0.99):
    admitted = confidence >= tau
    right = (guess[admitted] == pool.clean_labels[admitted]).float().mean().item()
    rows[tau] = {"admitted": admitted.float().mean().item(), "right": right}
answer = pd.DataFrame(rows).T.rename_axis("τ")
print(answer.map("{:.1%}".format))
""",
)
def _thresholds(answer: Any, *, runs: Any, pool: Any) -> None:
    import pandas as pd

    require(isinstance(answer, pd.DataFrame), "answer with a DataFrame: one row per τ")
    require(
        {"admitted", "right"} <= set(answer.columns),
        "name the columns 'admitted' (share of the pool) and 'right' (share of those correct)",
    )
    missing = [tau for tau in TAUS if not any(abs(float(i) - tau) < 1e-9 for i in answer.index)]
    require(not missing, f"add rows for τ = {', '.join(map(str, missing))}")
    confidence, guess = runs["supervised only"].predict_proba(pool).max(dim=1)
    for tau in TAUS:
        row = answer.loc[[i for i in answer.index if abs(float(i) - tau) < 1e-9][0]]
        admitted = confidence >= tau
        share = admitted.float().mean().item()
        right = (guess[admitted] == pool.clean_labels[admitted]).float().mean().item()
        require(
            abs(float(row["admitted"]) - share) < 2e-3,
            f"τ = {tau}: 'admitted' is the share of the pool whose top probability is >= τ",
        )
        given = float(row["right"])
        require(
            (math.isnan(given) and math.isnan(right)) or abs(given - right) < 2e-3,
            f"τ = {tau}: 'right' is the share of the admitted images whose guess matches "
            "pool.clean_labels",
        )


@exercise(
    "5.2",
    "Another labelled set",
    needs=("labelled",),
    solution="""
other = replace(tlkit.datasets.few_labels(digits, k=5, seed=1), target_test=None, source_test=None)
plain = tlkit.fit(replace(other, target=None), "small_cnn", **settings)
pseudo = tlkit.fit(other, "small_cnn", pseudo_label="threshold", **settings)
answer = (plain, pseudo)
print(f"labelled set of seed 1: supervised only {plain.evaluate(test)['accuracy']:.1%}, "
      f"threshold τ=0.95 {pseudo.evaluate(test)['accuracy']:.1%}")
""",
)
def _other_set(answer: Any, *, labelled: Any) -> None:
    import torch

    require(
        isinstance(answer, tuple | list) and len(answer) == 2,
        "answer with the pair of runs (supervised only, threshold)",
    )
    plain, pseudo = (require_run(r, "each run") for r in answer)
    require(plain.data is not None and plain.data.target is None, "train the first without the pool")
    require(
        pseudo.data is not None and pseudo.data.target is not None,
        "the second learns from the unlabelled pool too: keep the target in its task",
    )
    require(
        "threshold" in str(pseudo.config.pseudo_label),
        "train the second with pseudo_label='threshold'",
    )
    def images(domain: Any) -> Any:
        return domain.images[domain.labelled_mask]

    a, b = images(plain.data.source), images(pseudo.data.source)
    require(
        a.shape == b.shape and torch.equal(a, b),
        "give both runs the same labelled set, so that only the pool differs",
    )
    chapter = images(labelled)
    require(
        a.shape != chapter.shape or not torch.equal(a, chapter),
        "this is the chapter's labelled set: draw another one (few_labels with another seed)",
    )


@exercise(
    "5.3",
    "The threshold rule as a strategy",
    solution="""
@tlkit.register
class MyThreshold:
    \"\"\"Pseudo-label the target images whose top probability is at least tau.\"\"\"

    name = "my_threshold"
    family = "pseudo_label"

    def __init__(self, tau: float = 0.95):
        self.tau = tau

    @tlkit.hookimpl
    def tlkit_pseudo_labels(self, step):
        p = step.target_logits.detach().float().softmax(dim=1)             # (B_t, K)
        confidence, guess = p.max(dim=1)
        return tlkit.PseudoLabels(targets=guess, weights=(confidence >= self.tau).float())


answer = MyThreshold
tlkit.unregister("my_threshold")
""",
)
def _threshold_strategy(answer: Any) -> None:
    import torch

    strategy = instance(answer, "pseudo_label", "tlkit_pseudo_labels")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4, generator=generator) * 3
    logits[0] = torch.tensor([5.0, 0, 0, 0])                    # confident
    logits[1] = torch.tensor([0.1, 0, 0, 0])                    # not confident
    step = _FakeStep(logits)
    out = strategy.tlkit_pseudo_labels(step=step)
    require(
        hasattr(out, "targets") and hasattr(out, "weights"),
        "return tlkit.PseudoLabels(targets=..., weights=...)",
    )
    p = logits.softmax(dim=1)
    confidence, guess = p.max(dim=1)
    targets = torch.as_tensor(out.targets)
    require(targets.shape == (16,), "targets: one class id per target image, shape (B_t,)")
    require(torch.equal(targets.long(), guess), "the pseudo-label is the most probable class")
    weights = torch.as_tensor(out.weights).float()
    require(weights.shape == (16,), "weights: one per target image, shape (B_t,)")
    require(
        torch.equal(weights, (confidence >= 0.95).float()),
        "weight 1 where the top probability (softmax of the logits) reaches τ = 0.95 by "
        "default, 0 elsewhere",
    )


class _FakeStep:
    """What a pseudo-label strategy reads from a :class:`tlkit.Step` (target logits)."""

    def __init__(self, target_logits: Any) -> None:
        self.target_logits = target_logits.clone().requires_grad_(True)
        self.logits = None
        self.x_target = None
