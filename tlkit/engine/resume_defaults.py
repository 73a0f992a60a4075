"""Options a resumed run takes from its checkpoint when this run leaves them at their defaults.

Some defaults are placeholders the run resolves (``batch_size="auto"``, ``augment="auto"``,
``image_size=None``), and the defaults of a few options have changed across tlkit versions
(``batch_size`` was 64; an unset ``image_size`` trained in-memory images at the backbone's size,
not the data's own). Comparing options as given would refuse a checkpoint written under another
default, or worse, resume it at another image size without a word. So an option left at its
default takes the checkpoint's value, and the run says so in one line; an option set to another
value is compared as given, and :func:`tlkit.engine.resume.check_identity` refuses it.

:func:`adopt` runs before the run's data feed is built (its batch size and image size depend on
these options); the run's :class:`~tlkit.engine.resume.RunCheckpoints` keeps the checkpoint it
read for :meth:`~tlkit.engine.resume.RunCheckpoints.restore`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from tlkit.datasets.sizing import requested_image_size, training_image_size
from tlkit.engine import checkpoint

#: Options whose default the run resolves itself: name -> the default (``FitConfig``'s).
FOLLOW_CHECKPOINT: dict[str, Any] = {"batch_size": "auto", "augment": "auto"}


@dataclasses.dataclass(frozen=True)
class Adopted:
    """What :func:`adopt` read and decided, kept by the run's
    :class:`~tlkit.engine.resume.RunCheckpoints` so the checkpoint is read once."""

    path: Path
    checkpoint: dict[str, Any]
    changes: dict[str, Any]  # the options taken from the checkpoint
    keep_saved: dict[str, Any]  # identity entries to compare as the checkpoint has them


def checkpoint_path(trainer: Any, source: str | os.PathLike | bool) -> Path | None:
    """The file ``resume=`` names: ``checkpoint_dir/last.pt`` for ``True`` (``None`` without
    a ``checkpoint_dir``, which :meth:`tlkit.engine.resume.RunCheckpoints.restore` explains)."""
    if source is True:
        folder = trainer.config.checkpoint_dir
        return Path(folder) / "last.pt" if folder else None
    return Path(os.fspath(source))


def adopt(trainer: Any, source: str | os.PathLike | bool) -> Adopted | None:
    """Give ``trainer`` the checkpoint's values of the options it left at their defaults (see
    the module docstring), printing them in one line; returns what it read and took (``None``
    when there is no checkpoint to read)."""
    path = checkpoint_path(trainer, source)
    if path is None or not path.is_file():
        return None  # restore() starts a new run or names the missing file
    ckpt = checkpoint.read(path, trainer.device, training=True)
    saved = ckpt.get("identity")
    changes: dict[str, Any] = {}
    keep_saved: dict[str, Any] = {}  # identity entries compared as the checkpoint has them
    if isinstance(saved, dict):
        config = trainer.config
        for name, default in FOLLOW_CHECKPOINT.items():
            theirs = saved.get(name, default)
            if getattr(config, name) == default and theirs not in (default, "custom"):
                changes[name] = theirs
        size = _saved_image_size(trainer, ckpt, saved)
        if size is not None:
            changes["image_size"] = size
            if saved.get("image_size") is None:  # unset there too: trained at another rule's
                keep_saved["image_size"] = None
    if changes:
        _apply(trainer, changes)
        if trainer.is_main:
            given = ", ".join(f"{k}={v!r}" for k, v in changes.items())
            print(
                f"tlkit: resuming '{path}' with {given}, as that run was trained (each left at its "
                "default here; another value would make another run, which resuming refuses).",
                file=sys.stderr,
                flush=True,
            )
    return Adopted(path, ckpt, changes, keep_saved)


def _saved_image_size(trainer: Any, ckpt: dict[str, Any], saved: dict[str, Any]) -> int | None:
    """The image size to resume at when this run leaves ``image_size`` unset and would train at
    another size than the checkpoint's network did; ``None`` when nothing is to change."""
    if trainer.config.image_size is not None or trainer.data.modality != "image":
        return None
    if isinstance(saved.get("image_size"), int):  # set there: the same rule as the others
        return int(saved["image_size"])
    spec = ckpt["model_spec"]
    theirs = spec.get("input_size")  # the side that checkpoint's network resized images to
    mine = trainer.model.backbone.input_size
    if isinstance(theirs, int) and theirs != mine:
        return theirs
    return None


def _apply(trainer: Any, changes: dict[str, Any]) -> None:
    config = trainer.config = dataclasses.replace(trainer.config, **changes)
    if "image_size" in changes:  # the network resizes its inputs to this side (backbones.base)
        trainer.model.backbone.input_size = requested_image_size(config.image_size, trainer.data)
        trainer.image_size = training_image_size(
            config.image_size, trainer.data, trainer.model.backbone
        )
