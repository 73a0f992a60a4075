"""Learning-rate schedules as multipliers of each group's base rate, one value per step."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "onecycle", "constant")


def lr_multiplier(schedule: str, step: int, total_steps: int, warmup: float = 0.0) -> float:
    """The factor applied to every base learning rate at optimisation step ``step``.

    * ``cosine``: linear warm-up over the first ``warmup`` fraction of steps, then cosine decay
      to zero.
    * ``onecycle``: fastai/Smith's one-cycle: cosine rise from 1/25 to 1 over the first
      ``warmup`` fraction (0.25 when ``warmup`` is 0), then cosine decay to ~0.
    * ``constant``: warm-up, then 1.
    """
    total_steps = max(1, total_steps)
    t = min(step, total_steps) / total_steps
    if schedule == "onecycle":
        peak = warmup or 0.25
        if t < peak:
            return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * t / peak)) / 2
        return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * (t - peak) / (1 - peak))) / 2
    if warmup > 0 and t < warmup:
        return min(1.0, (step + 1) / max(1.0, warmup * total_steps))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = 1 - warmup
        return 0.5 * (1 + math.cos(math.pi * (t - warmup) / span)) if span > 0 else 1.0
    raise ValueError(f"unknown schedule '{schedule}'; choose one of {SCHEDULES}")
