"""Chapter 4 (weak labels): a transition matrix, pair-flip noise, a bounded loss of your own."""

from __future__ import annotations

from typing import Any

from tlkit.exercises._core import exercise, instance, require, require_run


@exercise(
    "4.1",
    "The symmetric transition matrix",
    solution="""
eps, K = 0.2, 4
answer = (1 - eps) * torch.eye(K) + eps / (K - 1) * (torch.ones(K, K) - torch.eye(K))
print(answer)
print(f"P(given 3 | true 0) = {answer[0, 3]:.4f}")
""",
)
def _transition(answer: Any) -> None:
    import torch

    from tlkit.datasets import transition_matrix

    T = torch.as_tensor(answer, dtype=torch.float64)
    require(T.shape == (4, 4), f"K = 4 classes make a 4 x 4 matrix, not {tuple(T.shape)}")
    require(
        torch.allclose(T.sum(dim=1), torch.ones(4, dtype=T.dtype), atol=1e-5),
        "each row is a distribution over the given label: make every row sum to 1",
    )
    expected = transition_matrix("symmetric", 0.2, 4).to(torch.float64)
    require(
        torch.allclose(T.diagonal(), expected.diagonal(), atol=1e-5),
        "the diagonal is the chance that a label is kept: one minus the noise rate",
    )
    require(
        torch.allclose(T, expected, atol=1e-5),
        "the noise rate is shared equally among the K - 1 other classes",
    )


@exercise(
    "4.2",
    "GCE under pair-flip noise",
    needs=("pairflip", "acc"),
    solution="""
pf_run, _ = fit(pairflip, "gce")
answer = pf_run
print(f"GCE, 40% pair-flip: {pf_run.last['source_accuracy']:.1%}   "
      f"GCE, 40% symmetric: {acc['GCE (q=0.7)']:.1%}")
""",
)
def _pairflip(answer: Any, *, pairflip: Any, acc: Any) -> None:
    import torch

    run = require_run(answer)
    require(run.config.loss == "gce" or "gce" in str(run.config.loss), "train with loss='gce'")
    data = run.data.source if run.data is not None else None
    require(
        data is not None
        and len(data) == len(pairflip.source)
        and torch.equal(data.labels, pairflip.source.labels),
        "train on the pair-flip task (`pairflip`), not on the symmetric one",
    )
    require(
        run.last.get("source_accuracy", 1) < float(acc["GCE (q=0.7)"]),
        "train with the chapter's `fit` helper (same epochs and settings) to compare fairly",
    )


@exercise(
    "4.3",
    "MAE as a loss strategy",
    solution="""
@tlkit.register
class MAE:
    \"\"\"Mean absolute error on the probabilities: 1 - p_y (GCE with q = 1).\"\"\"

    name = "my_mae"
    family = "loss"
    requires_task = "classification"

    @tlkit.hookimpl
    def tlkit_supervised_loss(self, logits, targets):
        p = logits.float().softmax(dim=1)                                   # (B, K)
        return 1 - p.gather(1, targets.long().unsqueeze(1)).squeeze(1)      # (B,)


answer = MAE
tlkit.unregister("my_mae")
""",
)
def _mae(answer: Any) -> None:
    import torch

    strategy = instance(answer, "loss", "tlkit_supervised_loss")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=generator) * 2
    targets = torch.randint(0, 5, (6,), generator=generator)
    loss = strategy.tlkit_supervised_loss(logits=logits, targets=targets)
    require(isinstance(loss, torch.Tensor), "return a tensor of per-sample losses")
    require(loss.shape == (6,), f"return one loss per sample, shape (B,), not {tuple(loss.shape)}")
    p_true = logits.softmax(dim=1)[torch.arange(6), targets]
    require(
        torch.allclose(loss.float(), 1 - p_true, atol=1e-5),
        "the loss is bounded in [0, 1]: it uses the probability of the true class "
        "(softmax of the logits), not its log",
    )
