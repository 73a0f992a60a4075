"""Chapter 6b (pixel-level adaptation and validators): FDA by hand, info_max by hand, a
validator strategy of one's own."""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace
from typing import Any

from tlkit.exercises._core import Wrong, as_float, close, exercise, instance, require

#: The size of FDA's low-frequency square in exercise 6b.1 (tlkit's default ``beta``).
BETA = 0.1


def _low_frequency_mask(height: int, width: int, beta: float) -> Any:
    """The checker's own reference: FDA's centred low-frequency square, in ``fft2``'s layout.
    (tlkit's core never imports the strategy package, so the check carries the formula.)"""
    import torch

    b = int(beta * min(height, width))
    mask = torch.zeros(height, width, dtype=torch.bool)
    ch, cw = height // 2, width // 2
    mask[max(ch - b, 0) : ch + b + 1, max(cw - b, 0) : cw + b + 1] = True
    return torch.fft.ifftshift(mask)


def _fourier_transfer(src: Any, tgt: Any, beta: float) -> Any:
    """``src`` ``(C, H, W)`` with the low-frequency amplitude of ``tgt``, clipped to [0, 1]."""
    import torch

    fs, ft = torch.fft.fft2(src), torch.fft.fft2(tgt)
    low = _low_frequency_mask(src.shape[-2], src.shape[-1], beta)
    amplitude = torch.where(low, ft.abs(), fs.abs())
    return torch.fft.ifft2(torch.polar(amplitude, fs.angle())).real.clamp(0, 1)


@exercise(
    "6b.1",
    "FDA by hand",
    needs=("xs", "xt"),
    solution="""
H, W = xs.shape[-2:]
b = int(0.1 * min(H, W))                         # half-width of the low-frequency square
low = torch.zeros(H, W, dtype=torch.bool)
low[H // 2 - b : H // 2 + b + 1, W // 2 - b : W // 2 + b + 1] = True
low = torch.fft.ifftshift(low)                   # centred square -> fft2's layout
fs, ft = torch.fft.fft2(xs), torch.fft.fft2(xt)  # per channel, over the last two dims
amplitude = torch.where(low, ft.abs(), fs.abs())  # the target's low frequencies
answer = torch.fft.ifft2(torch.polar(amplitude, fs.angle())).real.clamp(0, 1)
""",
)
def _fda(answer: Any, *, xs: Any, xt: Any) -> None:
    import torch

    require(isinstance(answer, torch.Tensor), "answer with the new image as a tensor (C, H, W)")
    require(
        tuple(answer.shape) == tuple(xs.shape),
        "answer with one image of the source image's shape (C, H, W), not a batch",
    )
    given, src, tgt = answer.detach().float(), xs.float(), xt.float()
    expected = _fourier_transfer(src, tgt, BETA)
    if torch.allclose(given, expected, atol=1e-4):
        return
    fs, ft = torch.fft.fft2(src), torch.fft.fft2(tgt)
    mask = _low_frequency_mask(src.shape[-2], src.shape[-1], BETA)
    mixed = torch.where(mask, ft.abs(), fs.abs())
    unclipped = torch.fft.ifft2(torch.polar(mixed, fs.angle())).real
    everything = torch.fft.ifft2(torch.polar(ft.abs(), fs.angle())).real.clamp(0, 1)
    corner = torch.fft.ifft2(
        torch.polar(torch.where(torch.fft.fftshift(mask), ft.abs(), fs.abs()), fs.angle())
    ).real.clamp(0, 1)
    require(not torch.allclose(given, unclipped, atol=1e-4), "clip the new image to [0, 1]")
    require(
        not torch.allclose(given, src, atol=1e-4),
        "this is the source image unchanged: its low-frequency amplitude should come from the "
        "target image",
    )
    require(
        not torch.allclose(given, everything, atol=1e-4),
        "swap only the low frequencies (the centred square), not the whole amplitude spectrum",
    )
    require(
        not torch.allclose(given, corner, atol=1e-4),
        "the square is centred after fftshift: build it centred, then ifftshift it into the "
        "layout of fft2's output",
    )
    require(
        False,
        "keep the source's phase (the angle of its fft2) with the mixed amplitude, rebuild the "
        "spectrum with torch.polar and take the real part of ifft2",
    )


@exercise(
    "6b.2",
    "info_max by hand",
    needs=("logits",),
    solution="""
p = logits.softmax(1)                                   # (N, K) target predictions


def entropy(q):                                         # in nats, along the last dimension
    return -(q * q.clamp_min(1e-12).log()).sum(-1)


answer = float(entropy(p.mean(0)) - entropy(p).mean())
print(f"info_max by hand {answer:.4f}")
""",
)
def _info_max(answer: Any, *, logits: Any) -> None:
    value = as_float(answer, "info_max")
    p = logits.detach().float().softmax(1)

    def entropy(q: Any) -> Any:
        return -(q * q.clamp_min(1e-12).log()).sum(-1)

    balance, confidence = float(entropy(p.mean(0))), float(entropy(p).mean())
    expected = balance - confidence
    if close(value, expected, rel=1e-3, abs=1e-4):
        return
    require(
        not close(value, -confidence, rel=1e-3, abs=1e-4),
        "that is the entropy score (confidence alone): info_max also rewards predictions that "
        "use all the classes, through the entropy of the average prediction",
    )
    require(
        not close(value, -expected, rel=1e-3, abs=1e-4),
        "higher is better: check the sign of each term",
    )
    require(
        not close(value, balance, rel=1e-3, abs=1e-4),
        "subtract the mean entropy of the individual predictions too",
    )
    require(
        not close(value, expected / math.log(2), rel=1e-3, abs=1e-4),
        "use natural logarithms (nats), as tlkit's validators do",
    )
    require(
        False,
        "softmax the logits, then H(average of p) minus the average of H(p), with "
        "H(q) = -sum q log q over the classes",
    )


@exercise(
    "6b.3",
    "A validator strategy",
    solution="""
@tlkit.register
class MyConfidence:
    \"\"\"Validator: the mean of the largest class probability on the unlabelled target.\"\"\"

    name = "my_confidence"
    family = "validator"
    scores = ("score_confidence",)      # what it reports, for monitor=

    @tlkit.hookimpl
    def tlkit_target_scores(self, trainer, logits):
        return {"score_confidence": float(logits.softmax(1).max(1).values.mean())}


answer = MyConfidence
tlkit.unregister("my_confidence")
""",
)
def _validator(answer: Any) -> None:
    import torch

    strategy = instance(answer, "validator", "tlkit_target_scores")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 5, generator=generator) * 2
    features = torch.randn(40, 8, generator=generator)
    offered = {
        "trainer": SimpleNamespace(task="classification", num_classes=5),
        "logits": logits,
        "features": features,
    }
    hook = strategy.tlkit_target_scores
    params = inspect.signature(hook).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = offered
    else:
        unknown = [name for name in params if name not in offered]
        if unknown:
            raise Wrong(
                f"tlkit_target_scores receives trainer, logits and features; it has no "
                f"{unknown[0]}"
            )
        kwargs = {name: offered[name] for name in params}
    out = hook(**kwargs)
    require(isinstance(out, dict) and len(out) == 1, "return {score name: number}, one score")
    ((key, value),) = out.items()
    require(
        key in ("confidence", "score_confidence"),
        "name the score confidence (tlkit logs it as score_confidence)",
    )
    number = as_float(value, "the score")
    expected = float(logits.softmax(1).max(1).values.mean())
    require(
        not close(number, -expected, rel=1e-4),
        "higher must mean better for monitor=: check the sign",
    )
    require(
        close(number, expected, rel=1e-4, abs=1e-6),
        "the mean over the target samples of the largest softmax probability (from the logits)",
    )
