"""The default observer: progress that suits where the output goes.

* In a Jupyter kernel: a tqdm widget bar (``tqdm.auto``), with a one-line summary per epoch.
* On a terminal: tqdm's text bar, redrawn in place, with the same summaries.
* Anywhere else -- a log file, a CI job, a pipe: one plain line per epoch (steps, elapsed time,
  ETA, metrics). tqdm's text bar redraws itself with carriage returns at every step, which in a
  file is one fragment per step: megabytes over a long run, and unreadable.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tlkit.hookspecs import hookimpl


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a progress line."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def epoch_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of a history row worth printing (not the lr or step counters)."""
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, float) and k != "lr" and not k.startswith("step")
    }


def _in_notebook() -> bool:
    """Whether ``tqdm.auto`` would draw a widget (a Jupyter kernel with ipywidgets)."""
    from tqdm.auto import tqdm

    return tqdm.__module__.startswith("tqdm.notebook")


class ProgressBar:
    """Steps done, the running loss and a summary line per epoch -- or, when ``stream`` is not
    a terminal (and we are not in a notebook), only the summary lines.

    Args:
        stream: where to write (default: ``sys.stderr`` at the start of each fit).
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self.bar: Any = None
        self._out: IO[str] = sys.stderr
        self._start = 0.0
        self._first_step = 0

    def _live(self) -> bool:
        if self.stream is None and _in_notebook():
            return True
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self._out if self.stream is not None else None)
        else:
            print(text, file=self._out, flush=True)

    @hookimpl
    def tlkit_on_fit_start(self, trainer: Any) -> None:
        state = trainer.state
        self._out = self.stream if self.stream is not None else sys.stderr
        self._start, self._first_step = time.perf_counter(), state.step
        if self._live():
            from tqdm.auto import tqdm

            kwargs = {"file": self._out} if self.stream is not None else {}
            self.bar = tqdm(
                total=state.total_steps,
                initial=state.step,
                desc="tlkit",
                unit="step",
                leave=True,
                **kwargs,
            )
        else:
            resumed = f", resuming at step {state.step}" if state.step else ""
            self._line(f"tlkit: {trainer.config.epochs} epochs, {state.total_steps} steps{resumed}")

    @hookimpl
    def tlkit_on_step_end(self, logs: dict[str, float]) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    @hookimpl
    def tlkit_on_epoch_end(self, epoch: int, metrics: dict[str, Any], trainer: Any) -> None:
        text = "  ".join(f"{k}={v:.4f}" for k, v in epoch_metrics(metrics).items())
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}/{trainer.config.epochs}")
            self._line(f"epoch {epoch}: {text}")
            return
        state = trainer.state
        elapsed = time.perf_counter() - self._start
        done = max(1, state.step - self._first_step)
        eta = elapsed / done * max(0, state.total_steps - state.step)
        self._line(
            f"epoch {epoch}/{trainer.config.epochs}  step {state.step}/{state.total_steps}  "
            f"elapsed {format_seconds(elapsed)}  eta {format_seconds(eta)}  {text}"
        )

    @hookimpl
    def tlkit_on_fit_end(self, trainer: Any, history: list[dict[str, Any]]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            return
        # also called after an error, so say what happened, not "done"
        reason = getattr(getattr(trainer, "stopping", None), "reason", None)  # patience=
        if reason is None and trainer.state.stopped_early:
            reason = "stop requested"
        why = f" ({reason})" if reason else ""
        elapsed = format_seconds(time.perf_counter() - self._start)
        self._line(f"tlkit: training ended after {len(history)} epoch(s), {elapsed}{why}")
