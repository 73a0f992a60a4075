"""The learning-rate finder (Smith 2017; fastai's ``lr_find``): train a copy of the model for a
short run while the learning rate grows exponentially from ``start_lr`` to ``end_lr``, record
the smoothed loss at each step, stop once it diverges, and pick a rate from the curve.

The sweep trains a deep copy of the model with a fresh optimiser, so neither the caller's model
nor any optimiser state changes, and PyTorch's global random state is put back afterwards: a run
trained after the sweep is the run that would have been trained with the picked rate alone.

It sweeps the phase that trains the backbone, with the run's strategies, class weights and
sampler, so the loss it watches is the loss the run optimises: every layer for ``full``, and for
``fine_tune`` its unfrozen phase (each layer at its discriminative rate, ``lr / lr_spread`` ..
``lr``). That phase is where too high a rate destroys the pretrained features; the head alone, on
the frozen backbone's features, tolerates rates far higher (its sweep's lowest loss sat at
0.3-4 where the whole fine-tune collapses from 0.03), so a sweep of the head misses the cliff.
``feature_extraction`` sweeps the head, its only phase. Four picks:

* ``"edge"`` (default): a fifth of the rate with the lowest loss -- the rate past which the
  short run stops gaining, backed off;
* ``"steep"``: the rate where the loss falls fastest per decade of learning rate, read on the
  descent (up to the lowest loss);
* ``"valley"``: the longest stretch over which the loss keeps falling, and a point about
  half-way down it (fastai's default) -- robust to noisy curves, but lower;
* ``"minimum"``: a tenth of the rate with the lowest loss (fastai v1's rule of thumb).

Why ``"edge"``: ``benchmarks/results/lr_finder.md`` trains each pick and a grid of rates over
five seeds. On the two tasks where accuracy is most sensitive to the rate (digits-m from scratch
and a 10-label ImageNet fine-tune of it), the best rate of a whole run sat 2.6-6.7x below the
sweep's lowest-loss rate, 4.5x at the median: hence the divisor, 5. On the two tasks held out
from that choice (synth-digits from scratch and fine-tuned) ``"edge"`` was within one std of the
grid's best too; over all five tasks it is within one std on three (a 0.003 miss on the
digits-m fine-tune, one test image on digits) and has the smallest mean gap, -0.006 (steep
-0.024). ``"steep"`` lands near the best in a fine-tune, but its median
pick is 2.6-9.5x above the best from scratch, and on one digits-m seed in five it picked past
the cliff (0.11 scored 0.79; the other seeds' picks 0.91-0.93); ``"valley"`` sits 4-16x below
the best and ``"minimum"`` 2-2.5x below it in a fine-tune. The sweep measures how far a hundred
steps at a rising rate get, while the final accuracy rewards the peak rate of a whole annealed
schedule, and a 5% change of rate alone moves a small fine-tune's accuracy by up to 0.14 on one
seed: treat the pick as a good start, and compare a rate or two around it when accuracy matters.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit.datasets.domain import Domain, DomainPair
from tlkit.engine.config import FitConfig
from tlkit.engine.trainer import Trainer
from tlkit.errors import ConfigError, TrainingError
from tlkit.hookspecs import hookimpl

METHODS = ("steep", "valley", "minimum", "edge")
#: The pick ``lr="find"`` trains with (the module docstring says why).
DEFAULT_METHOD = "edge"
#: The sweep stops once the smoothed loss exceeds this multiple of its lowest value.
DIVERGENCE_FACTOR = 4.0
#: Weight of the past in the loss's exponential moving average (fastai's 0.98).
SMOOTHING = 0.98


@dataclasses.dataclass
class LRFinder:
    """What a sweep found: the rates tried, the smoothed loss at each, and the pick.

    ``suggestion`` is the rate ``method`` picked; ``edge``, ``steep``, ``valley`` and
    ``minimum`` are the four picks;
    ``diverged_at`` is the rate at which the loss ran away (``None`` when it never did within
    the sweep); ``raw_losses`` are the unsmoothed step losses.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float
    method: str
    valley: float
    steep: float
    minimum: float
    edge: float
    start_lr: float
    end_lr: float
    diverged_at: float | None = None

    def plot(self, ax: Any = None) -> Any:
        """The smoothed loss against the learning rate (log scale), the pick marked; returns
        the matplotlib Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.6))
        else:
            fig = ax.figure
        ax.plot(self.lrs, self.losses, label="smoothed loss")
        ax.set_xscale("log")
        pick = self.lrs.index(self.suggestion)
        ax.plot(
            [self.suggestion],
            [self.losses[pick]],
            "o",
            color="C3",
            label=f"{self.method}: lr={self.suggestion:.2g}",
        )
        if self.diverged_at is not None:
            ax.axvline(self.diverged_at, color="0.5", ls=":", label="diverged")
        ax.set(xlabel="learning rate", ylabel="loss", title="learning-rate finder")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def describe(self) -> str:
        """One line: the pick, how, and over which sweep."""
        ran = f"{len(self.lrs)}-step sweep from {self.start_lr:.0e} to {self.lrs[-1]:.2g}"
        end = f", diverged at {self.diverged_at:.2g}" if self.diverged_at is not None else ""
        return f"lr finder picked lr={self.suggestion:.2g} ({self.method} of a {ran}{end})"

    def __repr__(self) -> str:
        return f"<LRFinder: {self.describe()}>"

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers, lists and strings: what a checkpoint keeps (``weights_only`` reads
        them back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> LRFinder:
        """The finder :meth:`to_dict` described; ``ValueError`` naming what does not fit."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - fields:
            raise ValueError(f"expected a dict with the fields {sorted(fields)}")
        missing = [m for m in METHODS if m not in data]  # a pick added after it was saved
        if missing and isinstance(data.get("lrs"), list):
            try:  # every pick is a function of the curve: read the missing ones off it
                derived = _picks(data["lrs"], data["losses"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"no {missing} pick, and none read off the curve ({exc})"
                ) from None
            data = {**{m: derived[m] for m in missing}, **data}
        try:
            finder = cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        n = len(finder.lrs)
        if n < 2 or len(finder.losses) != n or len(finder.raw_losses) != n:
            raise ValueError(
                f"{n} rates, {len(finder.losses)} losses and {len(finder.raw_losses)} raw losses"
            )
        if finder.method not in METHODS or finder.suggestion not in finder.lrs:
            raise ValueError(f"the pick ({finder.method}, {finder.suggestion}) is not in the sweep")
        return finder


class _Sweep:
    """Observer that sets each step's learning rate and records the loss it gave."""

    name = "lr_finder"

    def __init__(self, lrs: np.ndarray) -> None:
        self.lrs = lrs
        self.raw: list[float] = []
        self.smooth: list[float] = []
        self.diverged_at: float | None = None
        self._average = 0.0
        self._ratios: dict[int, list[float]] = {}  # optimiser -> group rate / head rate

    @hookimpl
    def tlkit_on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        if "loss" not in logs:
            return
        i = len(self.raw)
        loss = float(logs["loss"])
        self.raw.append(loss)
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        self.smooth.append(self._average / (1 - SMOOTHING ** (i + 1)))
        if not math.isfinite(self.smooth[-1]) or (
            self.smooth[-1] > DIVERGENCE_FACTOR * min(self.smooth)
        ):
            self.diverged_at = float(self.lrs[i])
        if self.diverged_at is not None or i + 1 >= len(self.lrs):
            trainer.request_stop()
            return
        self._set(trainer, float(self.lrs[i + 1]))

    def _set(self, trainer: Any, lr: float) -> None:
        """Scale every parameter group's base rate, keeping the discriminative spread."""
        for optimizer in (trainer.optimizer, getattr(trainer, "adversary_optimizer", None)):
            if optimizer is None:
                continue
            ratios = self._ratios.setdefault(
                id(optimizer), [g["base_lr"] / self.lrs[0] for g in optimizer.param_groups]
            )
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["base_lr"] = ratio * lr


def valley(lrs: list[float], losses: list[float]) -> int:
    """fastai's valley: the longest run of decreasing losses (longest decreasing subsequence),
    then a point about half-way down it. Returns an index into ``lrs``."""
    n = len(losses)
    lds = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[end] < lds[i]:
                end = i
                start = end - lds[end]
    sections = (end - start) / 3
    return min(n - 1, start + int(sections) + int(sections / 2))


def steep(lrs: list[float], losses: list[float]) -> int:
    """The index where the loss falls fastest per unit of log learning rate, read on the descent
    only (up to the lowest loss): past it training is breaking down, and a noisy curve can fall
    back steeply from a spike there (``tests/engine/test_lr_finder.py`` has such a curve)."""
    lowest = int(np.argmin(losses))
    if lowest < 1:
        return 0
    slopes = np.diff(losses[: lowest + 1]) / np.diff(np.log(lrs[: lowest + 1]))
    return int(np.argmin(slopes))


def minimum(lrs: list[float], losses: list[float], divisor: float = 10.0) -> int:
    """The index of the sweep's rate nearest the lowest loss's rate over ``divisor`` (a
    tenth by default)."""
    target = math.log(lrs[int(np.argmin(losses))] / divisor)
    return int(np.argmin([abs(math.log(lr) - target) for lr in lrs]))


def edge(lrs: list[float], losses: list[float]) -> int:
    """The index of the sweep's rate nearest a fifth of the rate with the lowest loss (on the
    default sweep, 100 rates over 8 decades, the nearest is 5.3x below): the rate
    past which the short run stops gaining, backed off by the factor that ``results/lr_finder.md``
    measured between it and the best rate of a whole run."""
    return minimum(lrs, losses, divisor=5.0)


def _picks(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """Each method's rate, ignoring the first tenth (the average is still settling) and the
    last five points (the run-away) when the curve is long enough."""
    lo, hi = len(lrs) // 10, len(lrs) - 5
    if hi - lo < 10:
        lo, hi = 0, len(lrs)
    xs, ys = lrs[lo:hi], losses[lo:hi]
    return {
        "valley": xs[valley(xs, ys)],
        "steep": xs[steep(xs, ys)],
        "minimum": xs[minimum(xs, ys)],
        "edge": xs[edge(xs, ys)],
    }


def check_sweep(start_lr: float, end_lr: float, num_it: int, method: str) -> None:
    """Refuse a sweep that cannot find anything, naming the fix."""
    if not (isinstance(num_it, int) and not isinstance(num_it, bool) and num_it >= 5):
        raise ConfigError(f"num_it={num_it!r} is too few steps for a sweep; use at least 5 (100).")
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name}={value!r} must be a positive learning rate.")
    if start_lr >= end_lr:
        raise ConfigError(
            f"start_lr={start_lr:g} must be below end_lr={end_lr:g} (e.g. 1e-7 and 10)."
        )
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not a pick; use one of {list(METHODS)}.")


def find_lr(
    data: DomainPair | Domain,
    config: FitConfig,
    *,
    model: nn.Module | None = None,
    classes: list[str] | None = None,
    train_transform: Any = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    method: str = DEFAULT_METHOD,
) -> LRFinder:
    """Sweep the learning rate for the run ``config`` describes and return what it found.

    ``model`` (a ``TransferModel`` or ``nn.Module``) is copied, never trained; without one the
    model is built from ``config.backbone`` with the run's seed, as the run itself will build it.
    """
    check_sweep(start_lr, end_lr, num_it, method)
    lrs = np.geomspace(start_lr, end_lr, num_it)
    if isinstance(data, DomainPair):  # the sweep evaluates nothing: its epochs are not epochs
        data = dataclasses.replace(data, source_test=None, target_test=None)
    epochs = num_it  # at least a step an epoch; max_steps ends the sweep
    sweep_config = dataclasses.replace(
        config,
        lr=float(start_lr),
        schedule="constant",
        warmup=0.0,
        epochs=epochs,
        freeze_epochs=0,  # fine_tune: sweep the unfrozen phase (the module docstring says why)
        max_steps=num_it,
        ema=None,
        monitor="auto",
        patience=None,
        restore_best=False,
        checkpoint_dir=None,
        checkpoint_every=0,
        log_dir=None,
        log_every=1,
        progress=False,
    )
    sweep = _Sweep(lrs)
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        trainer = Trainer(
            data,
            sweep_config,
            model=copy.deepcopy(model) if model is not None else None,
            classes=classes,
            observers=[sweep],
            train_transform=train_transform,
        )
        try:
            trainer.train()
        except TrainingError:  # a non-finite loss: the sweep has run past divergence
            if len(sweep.raw) < 2:
                raise
            sweep.diverged_at = float(lrs[len(sweep.raw)])
    tried = [float(x) for x in lrs[: len(sweep.smooth)]]
    if len(tried) < 2:
        raise ConfigError(
            f"the lr sweep ran only {len(tried)} step(s); the data gives too few batches. Use a "
            "smaller batch_size, or a fixed lr."
        )
    picks = _picks(tried, sweep.smooth)
    return LRFinder(
        lrs=tried,
        losses=list(sweep.smooth),
        raw_losses=list(sweep.raw),
        suggestion=picks[method],
        method=method,
        valley=picks["valley"],
        steep=picks["steep"],
        minimum=picks["minimum"],
        edge=picks["edge"],
        start_lr=float(start_lr),
        end_lr=float(end_lr),
        diverged_at=sweep.diverged_at,
    )
