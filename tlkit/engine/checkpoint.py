"""Checkpoint files that survive crashes and load safely, and the lock on a checkpoint folder.

* Written atomically: the bytes go to a temporary file in the same folder, are flushed and
  fsync'ed, then renamed over the target (``os.replace`` is atomic on POSIX and Windows) and the
  folder is fsync'ed, so a crash or a kill mid-write leaves the previous checkpoint intact. A kill
  can still leave the temporary file behind; :func:`remove_stale_temporaries` clears them when a
  run takes the folder.
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
from pathlib import Path
from typing import Any

import torch

from tlkit.errors import CheckpointError, ConfigError

FORMAT = "tlkit-checkpoint"
VERSION = 1
LOCK_NAME = ".tlkit.lock"


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` to ``path`` atomically, tagged with the tlkit format and version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            try:
                _unlock_file(self._file)
            finally:
                self._file.close()
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
