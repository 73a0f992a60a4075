"""What a checkpoint holds, whose run it belongs to, and how a run resumes from one.

A training checkpoint (``checkpoint_dir/last.pt``, ``best.pt``) holds the model, the modules and
state of the strategies, the EMA weights, the optimiser's moments, the position in training and
the logs, plus the run's *identity*: the options and data that define it. Resuming checks the
identity first, so a ``last.pt`` left by another run in the same folder is refused instead of
silently adopted. Options that only steer the rest of a run may change on resume (``epochs``,
``lr``, ``max_steps``, ``checkpoint_every``...): the new values apply from the resumed step on.

Only finite checkpoints are written: when a weight, a BatchNorm statistic or an optimiser moment
has become inf/NaN the save is refused, so the "last good checkpoint" is always good. A new run
(not resuming) moves an earlier run's checkpoints into ``previous/`` instead of replacing them, and
``resume=True`` on a folder without ``last.pt`` starts a new run, so restart loops work.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlkit.datasets.domain import DomainPair
from tlkit.engine import checkpoint, fingerprint, resume_defaults
from tlkit.engine.checkpoint import load_weights
from tlkit.engine.config import FitConfig
from tlkit.engine.safe_write import SaveError, fsync_folder
from tlkit.errors import CheckpointError, ConfigError, TrainingError

#: Options that define a run: a checkpoint written with other values belongs to another run.
IDENTITY_OPTIONS = (
    "backbone",
    "pretrained",
    "backbone_weights",
    "mode",
    "freeze_epochs",
    "batch_size",
    "target_batch_ratio",
    "image_size",
    "augment",
    "domain_bn",
    "source_free",
    "dropout",
    "optimizer",
    "ema",
    "loss",
    "pseudo_label",
    "adapt",
    "regularize",
    "validate",
    "seed",
)
_PLAIN = (int, float, bool, str, type(None))


def data_fingerprint(data: DomainPair) -> dict[str, Any]:
    """Sizes, a hash of the labels and a fingerprint of the content of each part of a task
    (:mod:`tlkit.engine.fingerprint`: the bytes of in-memory tensors, the sizes and times of
    files), so a run on other images with the same labels is another run."""
    out: dict[str, Any] = {"name": data.name, "task": data.task, "classes": list(data.classes)}
    for part in ("source", "source_test", "target", "target_test"):
        domain = getattr(data, part)
        if domain is not None:
            out[part] = fingerprint.describe(domain)
    return out


def check_identity(saved: Any, current: dict[str, Any], path: Any) -> None:
    """Refuse a checkpoint whose run differs from this one, naming the differences."""
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"checkpoint '{path}' does not say which run wrote it (written by an older tlkit?); "
            "start a new run, or load its weights with tlkit.load(path)."
        )
    diffs, fixes = [], []
    for key, mine in current.items():
        theirs = saved.get(key)
        if key == "data" and isinstance(theirs, dict):
            parts = [k for k in mine if mine.get(k) != theirs.get(k)]
            if parts:
                diffs.append(f"data ({', '.join(parts)})")
        elif theirs != mine:
            diffs.append(f"{key} ({theirs!r} there, {mine!r} here)")
            if isinstance(theirs, _PLAIN):  # a value that can be passed back as it is
                fixes.append(f"{key}={theirs!r}")
    if diffs:
        same = f"pass {', '.join(fixes)} to resume it" if fixes else "resume with the same options"
        raise CheckpointError(
            f"'{path}' was written by another run: it differs in {'; '.join(diffs)}. To continue "
            f"that run, {same} (and the same data); else give this run its own checkpoint_dir."
        )


def model_spec(
    model: nn.Module,
    config: FitConfig,
    classes: tuple[str, ...],
    image_size: int | None = None,
    resize: str = "crop",
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """How to rebuild the model's architecture without its training code or data, and how its
    inputs were prepared (``image_size``: the evaluation crop of file-backed images)."""
    return {
        "backbone": model.backbone.name,
        "task": model.task,
        "out_features": model.out_features,
        "input_size": model.backbone.input_size,
        "dropout": config.dropout,
        "classes": list(classes),
        "image_size": image_size,
        "resize": resize,  # "crop": short side then centre crop; "squash": to the square
        "modality": getattr(model.backbone, "modality", "image"),
        "build_kwargs": dict(getattr(model.backbone, "build_kwargs", None) or {}),
        "input_shape": list(input_shape) if input_shape is not None else None,
    }


# -- strategy state ---------------------------------------------------------------------------
def _is_plain(value: Any) -> bool:
    if isinstance(value, (nn.Module, nn.Parameter)):
        return False
    if isinstance(value, (_PLAIN, torch.Tensor)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def strategy_state(plugin: Any) -> dict[str, Any]:
    """``plugin.state_dict()``, or its plain attributes when it defines none (see hookspecs)."""
    if callable(getattr(plugin, "state_dict", None)):
        return plugin.state_dict()
    attrs = getattr(plugin, "__dict__", {})
    return {k: v for k, v in attrs.items() if _is_plain(v)}


def load_strategy_state(plugin: Any, state: dict[str, Any]) -> None:
    if callable(getattr(plugin, "load_state_dict", None)):
        plugin.load_state_dict(state)
        return
    for key, value in state.items():
        current = getattr(plugin, key, None)
        if (
            isinstance(current, torch.Tensor)
            and isinstance(value, torch.Tensor)
            and (current.shape == value.shape)
        ):
            with torch.no_grad():
                current.copy_(value)  # in place: other objects may hold this tensor
        else:
            setattr(plugin, key, value)


# -- one run's checkpoints --------------------------------------------------------------------
#: The files a run writes in its checkpoint folder; an earlier run's are moved aside, not lost.
CHECKPOINT_NAMES = ("last.pt", "best.pt")


class RunCheckpoints:
    """The checkpoints of one training run: where they go, the last good one, the run's
    identity (its data fingerprinted once), and the checkpoint a resume read.

    The trainer owns one (``trainer.checkpoints``) and asks it to :meth:`save`, to
    :meth:`restore` a run, to :meth:`set_aside_earlier` runs' files and to say what a diverged run
    kept (:meth:`note`). What goes into a checkpoint is the trainer's state, read by
    :meth:`payload`; how it is written and read back is :mod:`tlkit.engine.checkpoint`'s.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        #: The last good ``last.pt`` this run wrote or resumed from (``None`` before one).
        self.last: Path | None = None
        self._data: dict[str, Any] | None = None  # the data's fingerprint, read once per run
        self._adopted: resume_defaults.Adopted | None = None  # what adopt_defaults() read

    @property
    def folder(self) -> Path | None:
        folder = self.trainer.config.checkpoint_dir
        return Path(folder) if folder else None

    def identity(self) -> dict[str, Any]:
        """What makes this run this run: its defining options (:data:`IDENTITY_OPTIONS`) and
        its data (:func:`data_fingerprint`, taken on the first call)."""
        if self._data is None:
            self._data = data_fingerprint(self.trainer.data)
        values = self.trainer.config.to_dict()
        return {**{k: values[k] for k in IDENTITY_OPTIONS}, "data": self._data}

    # -- writing ------------------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        """The run's checkpoint (:func:`tlkit.engine.checkpoint.payload`): its model part and
        everything needed to resume."""
        trainer = self.trainer
        logs = trainer.logs.state_dict()
        finder = getattr(trainer, "lr_finder", None)
        return checkpoint.payload(
            config=trainer.config,
            spec=trainer.model_spec(),
            model=trainer.model,
            history=trainer.history,
            best=trainer.best,
            step_logs=logs["step_logs"],
            resume=self._resume_state(logs),
            lr_finder=finder.to_dict() if finder else None,
        )

    def _resume_state(self, logs: dict[str, Any]) -> checkpoint.ResumeState:
        """What ``last.pt`` / ``best.pt`` hold besides the model."""
        trainer = self.trainer
        state = trainer.state
        return checkpoint.ResumeState(
            identity=self.identity(),
            position={
                "epoch": state.epoch,
                "step": state.step,
                "step_in_epoch": state.step_in_epoch,
            },
            logs=logs,
            extra_modules=dict(trainer.extra_modules),
            strategy_state={k: strategy_state(p) for k, p in trainer.strategies.items()},
            early_stopping=trainer.stopping.state_dict(),
            ema=trainer.ema,
            source_bn_stats=trainer.domain_stats,
            optimisation=trainer.optimisation.state_dict() if trainer.optimisation else None,
        )

    def save(self, name: str) -> Path | None:
        """Write ``checkpoint_dir/name``; returns its path, or ``None`` when the disk refused it.

        A weight, BatchNorm statistic or optimiser moment that is not finite writes nothing and
        stops training, so the last checkpoint stays a good one. A write that fails (a full disk)
        warns and lets training go on: the previous checkpoint is kept, and the trained model is
        still returned at the end."""
        folder = self.folder
        if folder is None:
            return None
        try:
            path = checkpoint.write(self.payload(), folder / name)
        except checkpoint.NonFiniteError as exc:
            config = self.trainer.config
            raise TrainingError(
                f"the weights, BatchNorm statistics or optimiser state became non-finite "
                f"({exc.part}) by step {self.trainer.state.step}; training diverged, and no "
                f"checkpoint was written from it. {self.note()} Try a lower lr (now {config.lr}), "
                "grad_clip=1.0, or precision='fp32'."
            ) from None
        except SaveError as exc:
            kept = (
                f"the last good checkpoint is still {self.last}"
                if self.last is not None
                else "no checkpoint of this run is on disk yet"
            )
            warnings.warn(
                f"{exc} Training goes on without it ({kept}); the trained model is returned at "
                "the end.",
                stacklevel=2,
            )
            return None
        if name == "last.pt":
            self.last = path
        return path

    def note(self) -> str:
        """What a diverged run kept, for its error message."""
        if self.folder is None:
            return "No checkpoint was written (set checkpoint_dir= to keep one)."
        if self.last is None:
            return (
                "No checkpoint had been written yet: they are written at the end of each epoch, "
                "and every N steps with checkpoint_every=N."
            )
        return f"The last good checkpoint is kept at {self.last}."

    def set_aside_earlier(self) -> Path | None:
        """Move an earlier run's checkpoints (this run's or another's) out of the way, into
        ``previous/`` (``previous-2/``...) inside the folder, and say so in one line. A new run
        never silently replaces a checkpoint. Returns the folder they went to."""
        folder = self.folder
        if folder is None:
            return None
        found = [folder / n for n in CHECKPOINT_NAMES if (folder / n).is_file()]
        if not found:
            return None
        aside, k = folder / "previous", 1
        while aside.exists():
            k += 1
            aside = folder / f"previous-{k}"
        try:
            aside.mkdir()
            for path in found:
                os.replace(path, aside / path.name)
        except OSError as exc:
            raise ConfigError(
                f"checkpoint_dir '{folder}' holds an earlier run's checkpoints, and they could not "
                f"be moved to '{aside}' ({exc.strerror or exc}). Move or delete them, give this "
                "run its own checkpoint_dir, or pass resume=True to continue that run."
            ) from None
        fsync_folder(folder)
        names = " and ".join(p.name for p in found)
        print(
            f"tlkit: checkpoint_dir '{folder}' held an earlier run's {names}; moved to '{aside}' "
            "(pass resume=True to continue a run instead).",
            file=sys.stderr,
            flush=True,
        )
        return aside

    # -- resuming -----------------------------------------------------------------------------
    def adopt_defaults(self, source: str | Path | bool | None) -> dict[str, Any]:
        """Before the data feed is built: when resuming (``source`` set), the options the run
        left at their defaults take the checkpoint's values (:mod:`tlkit.engine.resume_defaults`);
        returns those it took. The checkpoint read is kept for :meth:`restore`."""
        if not source:
            return {}
        self._adopted = resume_defaults.adopt(self.trainer, source)
        return self._adopted.changes if self._adopted else {}

    def restore(self, source: str | Path | bool) -> Path | None:
        """Load a training checkpoint into the run (weights, strategies, position, logs, and
        its ``optimisation``, which keeps the main optimiser's state until the run enters the
        phase it was saved in); returns its path, or ``None`` when ``source`` is ``True`` and the
        folder has no ``last.pt`` yet (the run starts fresh)."""
        trainer = self.trainer
        path = resume_defaults.checkpoint_path(trainer, source)
        if path is None:
            raise ConfigError("resume=True needs checkpoint_dir= (where last.pt lives).")
        if source is True:
            if not path.exists():  # a restart loop's first start: nothing to resume yet
                if trainer.is_main:
                    print(
                        f"tlkit: resume=True, but '{path.parent}' holds no checkpoint yet: "
                        "starting a new run.",
                        file=sys.stderr,
                        flush=True,
                    )
                    self.set_aside_earlier()
                return None
        adopted, self._adopted = self._adopted, None
        if adopted is not None and adopted.path == path:  # read once, by adopt_defaults()
            ckpt, keep_saved = adopted.checkpoint, adopted.keep_saved
        else:
            ckpt, keep_saved = checkpoint.read(path, trainer.device, training=True), {}
        check_identity(ckpt.get("identity"), {**self.identity(), **keep_saved}, path)
        ema = trainer.ema.module if trainer.ema is not None else None
        restore_weights(ckpt, path, trainer.model, trainer.extra_modules, ema)
        if trainer.domain_stats is not None:
            if ckpt.get("source_bn_stats") is None:
                raise CheckpointError(
                    f"checkpoint '{path}' has no source-domain BatchNorm statistics, which a "
                    "run with separate domain passes keeps (written by an older tlkit?). Start a "
                    "new run, or load its weights with tlkit.load(path)."
                )
            trainer.domain_stats.load_state_dict(ckpt["source_bn_stats"])
        saved_state = ckpt.get("strategy_state") or {}
        for name, plugin in trainer.strategies.items():
            if name in saved_state:
                load_strategy_state(plugin, saved_state[name])
        s = ckpt["state"]
        trainer.state.epoch, trainer.state.step = s["epoch"], s["step"]
        trainer.state.step_in_epoch = s["step_in_epoch"]
        trainer.history, trainer.best = list(ckpt["history"]), dict(ckpt["best"])
        trainer.stopping.load_state_dict(ckpt.get("early_stopping"), trainer)
        try:
            trainer.logs.load_state_dict(ckpt)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"checkpoint '{path}': its logs are damaged; use another one."
            ) from None
        trainer.optimisation.load_state_dict(ckpt)  # this run's lr; the main state for its phase
        self.last = path if path.name == "last.pt" else None
        return path


def restore_weights(
    ckpt: dict[str, Any],
    path: Any,
    model: nn.Module,
    extra_modules: dict[str, nn.Module],
    ema_module: nn.Module | None,
) -> None:
    load_weights(model, ckpt["model"], "model", path)
    saved_modules = ckpt["extra_modules"]
    for name, module in extra_modules.items():
        if name not in saved_modules:
            raise CheckpointError(
                f"checkpoint '{path}' has no weights for strategy '{name}'s module; resume with "
                "the strategies it was written with."
            )
        load_weights(module, saved_modules[name], f"strategy '{name}'", path)
    if ema_module is not None and ckpt.get("ema") is not None:
        load_weights(ema_module, ckpt["ema"], "EMA", path)
