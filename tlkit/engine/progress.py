"""The default observer: a tqdm.auto progress bar (a widget in Jupyter, text elsewhere)."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from tlkit.hookspecs import hookimpl


class ProgressBar:
    """Shows steps done, the running loss, and a one-line summary after each epoch."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    @hookimpl
    def tlkit_on_fit_start(self, trainer: Any) -> None:
        state = trainer.state
        self.bar = tqdm(
            total=state.total_steps, initial=state.step, desc="tlkit", unit="step", leave=True
        )

    @hookimpl
    def tlkit_on_step_end(self, logs: dict[str, float]) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    @hookimpl
    def tlkit_on_epoch_end(self, epoch: int, metrics: dict[str, Any], trainer: Any) -> None:
        if self.bar is None:
            return
        shown = {
            k: v
            for k, v in metrics.items()
            if isinstance(v, float) and k not in ("lr",) and not k.startswith("step")
        }
        text = "  ".join(f"{k}={v:.4f}" for k, v in shown.items())
        self.bar.set_description(f"epoch {epoch}/{trainer.config.epochs}")
        self.bar.write(f"epoch {epoch}: {text}")

    @hookimpl
    def tlkit_on_fit_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
