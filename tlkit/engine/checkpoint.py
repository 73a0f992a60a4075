"""Checkpoint files that survive crashes and load safely, and the lock on a checkpoint folder.

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
from pathlib import Path
from typing import Any

import torch

from tlkit.engine.safe_write import plain_reason, write_atomically, write_with_rescue
from tlkit.errors import CheckpointError, ConfigError

FORMAT = "tlkit-checkpoint"
VERSION = 1
LOCK_NAME = ".tlkit.lock"


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` to ``path`` atomically, tagged with the tlkit format and version; a
    folder that cannot take it raises :class:`SaveError` in plain words and leaves no file."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    return write_atomically(path, lambda f: torch.save(data, f))


def save_model(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """:func:`save_checkpoint` for a finished model (``run.save``): a model with inf/NaN weights
    is refused, and when ``path`` cannot be written (a full disk) the file goes to a new folder
    under the temporary directory instead and the :class:`SaveError` names it."""
    bad = first_non_finite(payload, ("model", "ema"))
    if bad is not None:
        raise CheckpointError(
            f"the model to save to '{path}' holds non-finite values ({bad}): training diverged, "
            "and a file of it would be of no use. Train again with a lower lr, or load a good "
            "checkpoint (checkpoint_dir/best.pt) instead."
        )
    data = {"format": FORMAT, "version": VERSION, **payload}
    return write_with_rescue(path, lambda f: torch.save(data, f), "the model")


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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a tlkit checkpoint with ``weights_only=True``; every failure names the file and fix."""
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
    state = _unscaled_regression_head(state, mine)
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


_HEAD_SCALE_KEYS = ("scale.mean", "scale.std", "scale.fitted")


def _unscaled_regression_head(state: dict, mine: dict) -> dict:
    """A regression run saved before heads scaled their targets learned raw targets: give its
    head the identity scale (mean 0, std 1, fitted) so it loads and predicts as it did."""
    absent = [k for k in mine if k not in state]
    if not absent or not all(k.endswith(_HEAD_SCALE_KEYS) for k in absent):
        return state
    filled = dict(state)
    for key in absent:
        value = mine[key]
        filled[key] = torch.ones_like(value) if key.endswith(("std", "fitted")) else torch.zeros_like(value)
    return filled


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
