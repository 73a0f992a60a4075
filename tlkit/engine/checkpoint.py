"""Checkpoint files that survive crashes and load safely, and the lock on a checkpoint folder.

One layout, one writer, one reader: :func:`payload` builds what a file holds (the model part that
``run.save`` writes; with a :class:`ResumeState`, what ``last.pt`` / ``best.pt`` add to resume),
:func:`write` is the only way a checkpoint reaches disk and :func:`read` the only way one comes
back (``tlkit.load`` and resuming alike), so a file from either path is checked the same way.

* Written atomically (:func:`tlkit.engine.safe_write.write_atomically`): the bytes go to a
  temporary file in the same folder, are fsync'ed, then renamed over the target and the folder is
  fsync'ed, so a crash, a kill or a full disk mid-write leaves the previous checkpoint intact and
  no partial file; a full disk is reported as "no space left on device". A kill can still leave
  the temporary file behind; :func:`remove_stale_temporaries` clears them when a run takes the
  folder.
* Checked on every load: the archive's per-member CRC-32 must match (damaged bytes are refused,
  naming the file), and :func:`first_non_finite` finds inf/NaN in weights, BatchNorm statistics
  and optimiser moments, which are never written.
* Loaded with ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain Python values
  only, so loading one cannot run code. A file holding pickled objects is refused, and tlkit never
  suggests loading it unsafely.
* Tagged with a format name and version, so a foreign or corrupt file fails with a clear message.
* :class:`FolderLock`: one run at a time per checkpoint folder (an OS lock, released by the
  kernel when the process dies, so a killed run never leaves a stale lock).
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import zipfile
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlkit.engine.config import FitConfig
from tlkit.engine.safe_write import plain_reason, write_atomically, write_with_rescue
from tlkit.errors import CheckpointError, ConfigError

FORMAT = "tlkit-checkpoint"
VERSION = 1
LOCK_NAME = ".tlkit.lock"


# -- the payload: what a checkpoint holds ------------------------------------------------------
@dataclass
class ResumeState:
    """What a training checkpoint (``last.pt``, ``best.pt``) holds besides the model: enough to
    resume the run exactly. A ``run.save`` file is the same payload without it."""

    identity: dict[str, Any]  # the run's defining options and data (resume refuses another run's)
    position: dict[str, int]  # epoch, step, step_in_epoch
    logs: dict[str, Any]  # StepLog.state_dict(): step logs, the running epoch sums and weights
    extra_modules: dict[str, nn.Module] = dataclass_field(default_factory=dict)
    strategy_state: dict[str, Any] = dataclass_field(default_factory=dict)
    early_stopping: dict[str, Any] | None = None  # patience count, kept weights
    ema: Any = None  # an object with state_dict(): the averaged weights
    source_bn_stats: Any = None  # domain_bn="separate": the source passes' BatchNorm statistics
    #: ``Optimisation.state_dict()``: ``optimizer`` / ``optimizer_phase``,
    #: ``adversary_optimizer``, ``own_optimizers`` (by module) and ``scaler``.
    optimisation: dict[str, Any] | None = None


def _state(obj: Any) -> Any:
    return obj.state_dict() if obj is not None else None


def payload(
    *,
    config: FitConfig,
    spec: dict[str, Any],
    model: nn.Module,
    history: list[dict[str, Any]],
    best: dict[str, Any],
    step_logs: list[dict[str, float]],
    resume: ResumeState | None = None,
    lr_finder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The one layout of a tlkit checkpoint: the model part every file holds (what
    :func:`tlkit.load` needs), plus with ``resume`` the training state :func:`read` checks, and
    with ``lr_finder`` what ``lr="find"`` swept (``LRFinder.to_dict()``)."""
    out: dict[str, Any] = {
        "config": config.to_dict(),
        "model_spec": spec,
        "model": model.state_dict(),
        "history": history,
        "best": best,
        "step_logs": step_logs,
    }
    if lr_finder is not None:
        out["lr_finder"] = lr_finder
    if resume is not None:
        out.update(resume.logs)
        out.update(
            identity=resume.identity,
            state=dict(resume.position),
            extra_modules={k: m.state_dict() for k, m in resume.extra_modules.items()},
            strategy_state=resume.strategy_state,
            early_stopping=resume.early_stopping,
            ema=_state(resume.ema),
            source_bn_stats=_state(resume.source_bn_stats),
        )
        out.update(resume.optimisation or {})
    return out


# -- writing -----------------------------------------------------------------------------------
class NonFiniteError(CheckpointError):
    """A payload holding inf/NaN was not written; ``part`` names the first such tensor."""

    def __init__(self, path: Any, part: str) -> None:
        self.part = part
        super().__init__(
            f"the checkpoint to write to '{path}' holds non-finite values ({part}): training "
            "diverged, and a file of it would be of no use. Train again with a lower lr, or load a "
            "good checkpoint (checkpoint_dir/best.pt) instead."
        )


def write(data: dict[str, Any], path: str | os.PathLike, *, rescue: str | None = None) -> Path:
    """Write a :func:`payload` to ``path``: the one writer of ``run.save``, ``last.pt`` and
    ``best.pt``. A payload with inf/NaN weights, buffers or optimiser moments raises
    :class:`NonFiniteError` and writes nothing; the write is atomic (no partial file, the previous
    file kept). A folder that cannot take it raises :class:`SaveError` in plain words; with
    ``rescue`` (what is saved, e.g. ``"the model"``) the file goes to a new folder under the
    temporary directory instead and the error names it."""
    bad = first_non_finite(data)
    if bad is not None:
        raise NonFiniteError(path, bad)
    if rescue is None:
        return save_checkpoint(data, path)
    tagged = _tagged(data)
    return write_with_rescue(path, lambda f: torch.save(tagged, f), rescue)


def _tagged(data: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, **data}


def save_checkpoint(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """The file layer of :func:`write`: ``data`` tagged with the tlkit format and version,
    written atomically, with no check of its contents."""
    tagged = _tagged(data)
    return write_atomically(path, lambda f: torch.save(tagged, f))


def check_writable(folder: str | os.PathLike) -> None:
    """Fail now, before training, when checkpoints could not be written to ``folder``."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(
            f"checkpoint_dir '{folder}' cannot be written ({exc.strerror or exc}); choose a "
            "folder you can write to."
        ) from None


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files that a killed write left in ``folder``; returns them.
    Only call it while holding the folder's :class:`FolderLock` (no write is then in flight)."""
    removed = []
    for tmp in Path(folder).glob(".*.pt.*.tmp"):  # what save_checkpoint names them, nothing else
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


# -- reading -----------------------------------------------------------------------------------
def read(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, training: bool = False
) -> dict[str, Any]:
    """Read and check a tlkit checkpoint: the one reader of :func:`tlkit.load` and of resuming.

    The bytes must match their checksums, the file must load with ``weights_only=True`` and
    carry the tlkit tag, the model part of the :func:`payload` must be well-formed, and every
    weight, buffer and optimiser moment must be finite. ``training=True`` (resuming) also needs
    the training state: a ``run.save`` file is refused. Every failure names the file."""
    ckpt = load_checkpoint(path, map_location)
    if training and "state" not in ckpt:
        raise CheckpointError(
            f"'{path}' holds a finished model (saved with run.save), not a training state; "
            "resume from checkpoint_dir/last.pt, or load it with tlkit.load()."
        )
    for name, kind in (
        ("config", dict), ("model", dict), ("history", list), ("best", dict),
        ("model_spec", dict), ("step_logs", list),
    ):  # fmt: skip
        field(ckpt, name, kind, path)
    if training:
        state = field(ckpt, "state", dict, path)
        for key in ("epoch", "step", "step_in_epoch"):
            if not isinstance(state.get(key), int) or state[key] < 0:
                raise CheckpointError(
                    f"checkpoint '{path}': its training position ('{key}') is damaged; use "
                    "another checkpoint."
                )
        field(ckpt, "extra_modules", dict, path)
    bad = first_non_finite(ckpt)
    if bad is not None:
        raise CheckpointError(
            f"checkpoint '{path}' holds non-finite values ({bad}): the run that wrote it had "
            "diverged. Use an earlier checkpoint (best.pt, or one in previous/) or train again "
            "with a lower lr."
        )
    return ckpt


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The file layer of :func:`read`: the checksums, ``weights_only=True`` and the tlkit tag,
    with no check of the contents. Every failure names the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; check the path.")
    verify_checksums(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # not a refused object: a damaged file
            raise CheckpointError(
                f"checkpoint '{path}' could not be read (UnpicklingError). The file is truncated, "
                "corrupt or not a PyTorch file; use another checkpoint (best.pt / last.pt)."
            ) from None
        raise CheckpointError(
            f"'{path}' is not a tlkit checkpoint, or was written by code tlkit does not trust: "
            "it holds pickled Python objects, which could run code when loaded, so tlkit does not "
            "load them. Use a checkpoint that tlkit wrote (run.save(), checkpoint_dir/last.pt or "
            "best.pt); for plain weights of a backbone, pass backbone_weights=path."
        ) from None
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"checkpoint '{path}' could not be read ({type(exc).__name__}: {reason}). The file is "
            "truncated, corrupt or not a PyTorch file; use another checkpoint (best.pt / last.pt)."
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is not a tlkit checkpoint (no '{FORMAT}' tag). To start from plain "
            "weights, pass them to the backbone: tlkit.fit(..., backbone_weights=path)."
        )
    version = data.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {version!r}, newer than this tlkit "
            f"understands ({VERSION}); upgrade tlkit."
        )
    return data


def verify_checksums(path: Path) -> None:
    """Refuse a checkpoint whose bytes changed after it was written: a PyTorch file is a zip
    archive with a CRC-32 per member (pickle and every tensor's bytes), which ``torch.load``
    does not check. Costs one read of the file."""
    if not zipfile.is_zipfile(path):
        return  # not an archive at all: torch.load says why
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        bad = f"{type(exc).__name__}: {exc}"
    if bad is not None:
        raise CheckpointError(
            f"checkpoint '{path}' is damaged: the bytes of '{bad}' inside it no longer match "
            "their checksum (a failing disk or an incomplete copy). tlkit does not load it; use "
            "another checkpoint (best.pt, last.pt, or one in previous/) or train again."
        )


#: The parts of a checkpoint that must be finite for it to be worth resuming from or loading.
FINITE_PARTS = (
    "model",
    "extra_modules",
    "ema",
    "source_bn_stats",
    "optimizer",
    "adversary_optimizer",
    "own_optimizers",
)


def first_non_finite(ckpt: dict[str, Any], parts: tuple[str, ...] = FINITE_PARTS) -> str | None:
    """The dotted name of the first floating-point tensor in ``parts`` holding inf/NaN (weights,
    BatchNorm statistics, optimiser moments), or ``None``."""

    def walk(value: Any, name: str) -> str | None:
        if isinstance(value, torch.Tensor):
            finite = not value.is_floating_point() or bool(torch.isfinite(value).all())
            return None if finite else name
        items = (
            value.items()
            if isinstance(value, dict)
            else enumerate(value)
            if isinstance(value, (list, tuple))
            else ()
        )
        for key, item in items:
            found = walk(item, f"{name}.{key}")
            if found is not None:
                return found
        return None

    for part in parts:
        found = walk(ckpt.get(part), part)
        if found is not None:
            return found
    return None


def field(ckpt: dict, name: str, kind: type | tuple[type, ...], path: Any) -> Any:
    """``ckpt[name]`` checked to be a ``kind``; a missing or malformed field is a clear error."""
    if name not in ckpt:
        raise CheckpointError(
            f"checkpoint '{path}' has no '{name}' entry; it is damaged or was not written by "
            "tlkit. Use another checkpoint."
        )
    value = ckpt[name]
    if not isinstance(value, kind):
        wanted = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CheckpointError(
            f"checkpoint '{path}': '{name}' is a {type(value).__name__}, not a {wanted}; the file "
            "is damaged or was not written by tlkit. Use another checkpoint."
        )
    return value


def load_weights(module: torch.nn.Module, state: Any, what: str, path: Any) -> None:
    """``module.load_state_dict(state)`` with an error that says which tensors do not fit."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint '{path}': the {what} weights are damaged.")
    mine = module.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in mine.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (
            ("shapes differ", mismatched),
            ("missing", missing),
            ("unexpected", unexpected),
        ):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise CheckpointError(
            f"checkpoint '{path}' holds {what} weights of another architecture ("
            + "; ".join(parts)
            + "). Load it with the backbone, number of classes and strategies it was trained with."
        )
    module.load_state_dict(state)


class FolderLock:
    """An exclusive lock on a checkpoint folder for the duration of one run.

    Uses ``fcntl.flock`` (POSIX) or ``msvcrt.locking`` (Windows) on ``<folder>/.tlkit.lock``; the
    operating system drops it when the process ends, however it ends. A second run on the same
    folder gets a :class:`ConfigError` naming the holder.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._file = None

    def acquire(self) -> FolderLock:
        check_writable(self.folder)
        f = open(self.folder / LOCK_NAME, "a+")  # noqa: SIM115 - held until release()
        try:
            _lock_file(f)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ConfigError(
                f"checkpoint_dir '{self.folder}' is in use by another run ({holder}). Wait for "
                "it to finish, stop it, or give this run its own checkpoint_dir."
            ) from None
        self._file = f
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}")
            f.flush()
        except OSError as exc:  # a full disk: fail now, before anything is trained
            self.release()
            raise ConfigError(
                f"checkpoint_dir '{self.folder}' cannot be written ({plain_reason(exc)}); free "
                "some space or choose another folder."
            ) from None
        return self

    def release(self) -> None:
        if self._file is not None:
            try:
                _unlock_file(self._file)
            finally:
                try:
                    self._file.close()
                except OSError:  # the holder's name could not be flushed (a full disk)
                    pass
                self._file = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _lock_file(f: Any) -> None:
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock_file(f: Any) -> None:
    if os.name == "nt":  # pragma: no cover
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
