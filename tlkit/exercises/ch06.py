"""Chapter 6 (domain adaptation): proxy A-distance, MMD within and across, CORAL as a strategy."""

from __future__ import annotations

from typing import Any

from tlkit.exercises._core import as_float, close, exercise, instance, require

ACC = "domain classifier acc."


@exercise(
    "6.1",
    "Proxy A-distance",
    needs=("alignment",),
    solution="""
answer = 2 * (1 - 2 * (1 - alignment["domain classifier acc."]))   # err = 1 - accuracy
print(answer.round(2).to_string())
print(f"closest domains: {answer.idxmin()}; best target accuracy: "
      f"{alignment['target accuracy (head)'].idxmax()}")
""",
)
def _pad(answer: Any, *, alignment: Any) -> None:
    import pandas as pd

    require(isinstance(answer, pd.Series), "answer with a pandas Series: one value per run")
    require(
        set(answer.index) == set(alignment.index),
        "compute it for every run of the alignment table (same index)",
    )
    expected = 2 * (1 - 2 * (1 - alignment[ACC].astype(float)))
    given = answer.astype(float).reindex(expected.index)
    require(
        (given.between(-2 - 1e-9, 2 + 1e-9)).all(),
        "d_A lies between 0 and 2 for a classifier at or above chance: check the formula",
    )
    require(
        ((given - expected).abs() < 1e-6).all(),
        "err is the domain classifier's error rate, one minus its accuracy",
    )


@exercise(
    "6.2",
    "MMD² within and across domains",
    needs=("runs", "features", "src", "tgt", "mmd_loss"),
    solution="""
fs, ft = features(runs["source only"], src), features(runs["source only"], tgt)
half = len(fs) // 2
within = float(mmd_loss(torch.from_numpy(fs[:half]), torch.from_numpy(fs[half:])))
across = float(mmd_loss(torch.from_numpy(fs), torch.from_numpy(ft)))
answer = (within, across)
print(f"MMD² source vs source: {within:.4f}   source vs target: {across:.4f} "
      f"({across / max(within, 1e-8):.0f}x)")
""",
)
def _mmd(answer: Any, *, runs: Any, features: Any, src: Any, tgt: Any, mmd_loss: Any) -> None:
    import torch

    require(
        isinstance(answer, tuple | list) and len(answer) == 2,
        "answer with the pair (within the source, source vs target)",
    )
    within, across = (as_float(v, "each MMD²") for v in answer)
    fs, ft = features(runs["source only"], src), features(runs["source only"], tgt)
    half = len(fs) // 2
    w = float(mmd_loss(torch.from_numpy(fs[:half]), torch.from_numpy(fs[half:])))
    a = float(mmd_loss(torch.from_numpy(fs), torch.from_numpy(ft)))
    require(
        close(within, w, rel=1e-3, abs=1e-6),
        "within: split the source-only model's source features into two halves and compare them",
    )
    require(
        close(across, a, rel=1e-3, abs=1e-6),
        "across: compare all the source features with the target features (same model)",
    )


@exercise(
    "6.3",
    "CORAL as an adapt strategy",
    solution="""
@tlkit.register
class MyCoral:
    \"\"\"CORAL (Sun & Saenko 2016): match the feature covariances of source and target.\"\"\"

    name = "my_coral"
    family = "adapt"

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step):
        fs, ft = step.features.float(), step.target_features.float()     # (B, d), (B_t, d)
        d = fs.shape[1]
        cs, ct = torch.cov(fs.T), torch.cov(ft.T)                         # (d, d)
        return {"coral": self.weight * ((cs - ct) ** 2).sum() / (4 * d * d)}


answer = MyCoral
tlkit.unregister("my_coral")
""",
)
def _coral(answer: Any) -> None:
    import torch

    strategy = instance(answer, "adapt", "tlkit_extra_losses")
    generator = torch.Generator().manual_seed(0)
    fs = torch.randn(12, 5, generator=generator)
    ft = torch.randn(10, 5, generator=generator) * 1.5 + 0.3
    step = _FakeStep(fs, ft)
    out = strategy.tlkit_extra_losses(step=step)
    require(isinstance(out, dict) and len(out) == 1, "return {term name: scalar tensor}")
    (value,) = out.values()
    require(
        isinstance(value, torch.Tensor) and value.ndim == 0,
        "the term is one scalar tensor (it is added to the loss)",
    )
    expected = ((torch.cov(fs.T) - torch.cov(ft.T)) ** 2).sum() / (4 * 5 * 5)
    if not torch.allclose(value.detach().float(), expected, rtol=1e-4, atol=1e-7):
        ratio = float(value.detach()) / float(expected)
        require(
            not (0.7 < ratio < 1.4),
            "nearly: covariances use the unbiased estimate (divide by n - 1, as torch.cov)",
        )
        require(
            False,
            "the squared Frobenius distance of the two covariance matrices, over 4 d², with "
            "the default weight",
        )
    value.backward()
    require(step.features.grad is not None, "keep the term differentiable (no .detach())")


class _FakeStep:
    """What an adapt strategy reads from a :class:`tlkit.Step`: the batch's features."""

    def __init__(self, features: Any, target_features: Any) -> None:
        self.features = features.clone().requires_grad_(True)
        self.target_features = target_features.clone().requires_grad_(True)
        self.logits = self.target_logits = None
