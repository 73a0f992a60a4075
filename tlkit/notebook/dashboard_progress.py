"""The dashboard's progress line and the observer that feeds it from a training run.

Why an :class:`Eta` object: the first steps of a run are slow for reasons that do not repeat
(DataLoader workers starting, the first CUDA/compile call, caches filling), so a time estimate
from the first step alone is several times too long. The estimate waits until the run has
warmed up, then uses the pace since then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tlkit.hookspecs import hookimpl
from tlkit.notebook.dashboard_runs import RunRecord, format_seconds

#: Seconds between two updates of the progress text (each update is a message to the browser).
PROGRESS_INTERVAL = 0.25


def progress_text(step: int, total: int, elapsed: float, eta: float | None = None) -> str:
    """``step 120/600 · 0:12 elapsed · ETA 0:48``: the numbers beside the progress bar."""
    text = f"step {step}/{total} · {format_seconds(elapsed)} elapsed"
    if eta is not None and step < total:
        text += f" · ETA {format_seconds(eta)}"
    return text


class Eta:
    """Remaining time of a run from its pace after warm-up.

    Args:
        total: the run's last step.
        clock: seconds as a float (``time.perf_counter``; a fake one in tests).
        warmup: steps ignored at the start (their time is not representative).
        min_steps: steps to time after the warm-up before giving an estimate.
    """

    def __init__(
        self,
        total: int,
        *,
        clock: Callable[[], float] = time.perf_counter,
        warmup: int = 3,
        min_steps: int = 5,
    ) -> None:
        self.total, self.clock = total, clock
        self.warmup, self.min_steps = warmup, min_steps
        self._first: int | None = None
        self._mark: tuple[int, float] | None = None
        self._last: tuple[int, float] | None = None

    def start(self, step: int) -> None:
        """The run begins (or resumes) at ``step``."""
        self._first, self._mark, self._last = step, None, None

    def observe(self, step: int) -> None:
        """A step has ended (call it for every step: it only reads the clock)."""
        if self._first is None:
            self.start(step - 1)
        now = self.clock()
        if self._mark is None and step - self._first >= self.warmup:
            self._mark = (step, now)
        self._last = (step, now)

    def remaining(self) -> float | None:
        """Seconds left, or ``None`` while the run is warming up."""
        if self._mark is None or self._last is None:
            return None
        (s0, t0), (s1, t1) = self._mark, self._last
        if s1 - s0 < self.min_steps:
            return None
        return (t1 - t0) / (s1 - s0) * max(0, self.total - s1)


class RunObserver:
    """Feeds the progress bar and text, the status and the per-epoch views from a trainer
    (only through its documented attributes).

    Args:
        record: the run's record (history and epoch times are written into it).
        bar, text: the progress widgets (``IntProgress``, ``HTML``).
        on_status: ``(trainer, values, ended_epoch_or_None)``: the status line.
        on_epoch: ``(trainer)`` after each epoch (tables, confusion matrix).
        on_end: ``(trainer)`` when training ends (the source -> target grid).
        clock: seconds as a float.
    """

    def __init__(
        self,
        record: RunRecord,
        bar: Any,
        text: Any,
        *,
        on_status: Callable[[Any, Mapping[str, Any], int | None], None],
        on_epoch: Callable[[Any], None],
        on_end: Callable[[Any], None],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.record, self.bar, self.text = record, bar, text
        self.on_status, self.on_epoch, self.on_end = on_status, on_epoch, on_end
        self.clock = clock
        self._start = self._epoch_start = clock()
        self._shown = float("-inf")
        self.eta = Eta(1, clock=clock)

    def _progress(self, trainer: Any, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._shown < PROGRESS_INTERVAL:
            return
        self._shown = now
        s = trainer.state
        self.bar.value = s.step
        self.text.value = progress_text(
            s.step, s.total_steps, now - self._start, self.eta.remaining()
        )

    @hookimpl
    def tlkit_on_fit_start(self, trainer: Any) -> None:
        self._start = self._epoch_start = self.clock()
        self.eta = Eta(trainer.state.total_steps, clock=self.clock)
        self.eta.start(trainer.state.step)
        self.bar.max = max(1, trainer.state.total_steps)
        self._progress(trainer, force=True)

    @hookimpl
    def tlkit_on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        self.eta.observe(trainer.state.step)
        self._progress(trainer)
        if logs:
            self.on_status(trainer, logs, None)

    @hookimpl
    def tlkit_on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        now = self.clock()
        self.record.epoch_seconds.append(now - self._epoch_start)
        self._epoch_start = now
        self.record.history = list(trainer.history)
        self._progress(trainer, force=True)
        self.on_status(trainer, metrics, epoch)
        self.on_epoch(trainer)

    @hookimpl
    def tlkit_on_fit_end(self, trainer: Any) -> None:
        self.on_end(trainer)
        self.record.history = list(trainer.history)
        s = trainer.state
        self.bar.value = s.step
        elapsed = format_seconds(self.clock() - self._start)
        how = " · stopped" if s.stopped_early else ""
        self.text.value = f"step {s.step}/{s.total_steps} · {elapsed} elapsed{how}"
