"""The strategies chapter (book/strategies.md): families, the step's loss, a term of your own."""

from __future__ import annotations

from typing import Any

from tlkit.exercises._core import as_float, close, exercise, instance, require

NAMES = ("gce", "fixmatch", "dann", "snd", "margin")


@exercise(
    "S.1",
    "Which family",
    solution="""
answer = {info.name: info.family for info in tlkit.strategies()
          if info.name in ("gce", "fixmatch", "dann", "snd", "margin")}
print(answer)
""",
)
def _families(answer: Any) -> None:
    import tlkit

    require(isinstance(answer, dict), "answer with a dict: strategy name -> family")
    families = {info.name: info.family for info in tlkit.strategies()}
    for name in NAMES:
        require(name in answer, f"give the family of {name!r}")
        require(
            answer[name] == families[name],
            f"{name!r}: which part of the step does it contribute? (tlkit.strategies() says)",
        )


@exercise(
    "S.2",
    "The loss of one step",
    needs=("ell", "ell_t", "w", "extra"),
    solution="""
answer = float(ell.mean() + (w * ell_t).sum() / len(ell_t) + sum(extra.values()))
""",
)
def _step_loss(answer: Any, *, ell: Any, ell_t: Any, w: Any, extra: Any) -> None:
    value = as_float(answer, "the loss")
    supervised = float(ell.mean())
    pseudo = float((w * ell_t).sum()) / len(ell_t)
    terms = float(sum(float(v) for v in extra.values()))
    if close(value, supervised + pseudo + terms):
        return
    require(
        not close(value, supervised + float((w * ell_t).sum() / w.sum()) + terms),
        "the pseudo-label term divides by B_t, the target batch size, masked samples included",
    )
    require(
        not close(value, supervised + pseudo),
        "add the adapt/regularize terms too: they are already weighted",
    )
    require(False, "supervised mean + weighted pseudo-label mean + the extra terms")


@exercise(
    "S.3",
    "Target entropy as an adapt strategy",
    solution="""
class TargetEntropy:
    \"\"\"Entropy minimisation (Grandvalet & Bengio 2005) on the unlabelled target batch.\"\"\"

    name = "my_target_entropy"
    family = "adapt"

    def __init__(self, weight: float = 0.1):
        self.weight = weight

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step):
        p = step.target_logits.float().softmax(dim=1)                        # (B_t, K)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)                  # (B_t,)
        return {"target_entropy": self.weight * entropy.mean()}


answer = TargetEntropy
""",
)
def _target_entropy(answer: Any) -> None:
    import torch

    strategy = instance(answer, "adapt", "tlkit_extra_losses")
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(8, 4, generator=generator) * 2).requires_grad_(True)
    step = _FakeStep(logits)
    out = strategy.tlkit_extra_losses(step=step)
    require(isinstance(out, dict) and len(out) == 1, "return {term name: scalar tensor}")
    (value,) = out.values()
    require(isinstance(value, torch.Tensor) and value.ndim == 0, "the term is a scalar tensor")
    p = logits.detach().softmax(dim=1)
    entropy = -(p * p.log()).sum(dim=1).mean()
    require(
        torch.allclose(value.detach().float(), 0.1 * entropy, atol=1e-5),
        "the mean over the target batch of the entropy of softmax(target logits), times the "
        "default weight 0.1",
    )
    value.backward()
    require(logits.grad is not None, "keep the term differentiable (no .detach())")


class _FakeStep:
    def __init__(self, target_logits: Any) -> None:
        self.target_logits = target_logits
        self.logits = self.features = self.target_features = None
