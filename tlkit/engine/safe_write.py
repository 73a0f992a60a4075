"""Writing files so that a full disk or a read-only folder costs the write and nothing else.

Every file tlkit writes for a user (checkpoints, ``run.save``, ``run.export``) goes through
:func:`write_atomically`: the bytes go to a temporary file in the target's folder through
``os.write`` (so the ``OSError`` of a full disk surfaces as itself, not as a serialiser's
``enforce fail``), are fsync'ed, and are renamed over the target; on any failure the temporary
file is removed, so no partial file is ever left, and the error is a :class:`SaveError` that
says what happened in plain words ("no space left on device").
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlkit.errors import CheckpointError

_PLAIN = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.ENOENT: "the folder does not exist",
    errno.EIO: "input/output error (a failing disk?)",
}


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Files are created as ``open()`` would create them (``mkstemp`` alone gives 0600).
_FILE_MODE = 0o666 & ~_read_umask()


class SaveError(CheckpointError, OSError):
    """A file could not be written (full disk, read-only folder...). Nothing partial was left
    behind, and the message says where what was being saved is kept."""


def plain_reason(exc: BaseException) -> str:
    """What went wrong with a write, in words (``errno`` first, then the message)."""
    code = getattr(exc, "errno", None)
    if code in _PLAIN:
        return _PLAIN[code]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def save_error(path: Path, exc: BaseException, kept: str = "") -> SaveError:
    """A :class:`SaveError` for ``path`` caused by ``exc``; ``kept`` says what survives."""
    message = f"could not write '{path}': {plain_reason(exc)}; nothing was written there."
    err = SaveError(f"{message} {kept}".strip())
    err.errno = getattr(exc, "errno", None)
    return err


class _Sink:
    """A binary file-like object over a file descriptor that remembers the ``OSError`` of a
    failed write (serialisers such as ``torch.save`` replace it with their own error)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: OSError | None = None
        self.written = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            try:
                done += os.write(self.fd, view[done:])
            except OSError as exc:
                self.error = exc
                raise
        self.written += done
        return done

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.written


def write_atomically(path: str | os.PathLike, produce: Callable[[Any], Any]) -> Path:
    """Call ``produce(file)`` to write ``path``'s bytes, atomically: all of them or none.

    Raises :class:`SaveError` when the folder cannot be written (no partial file stays); other
    exceptions of ``produce`` (and ``KeyboardInterrupt``) pass through, also leaving nothing."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise save_error(path, exc) from exc
    sink = _Sink(fd)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else _FILE_MODE)
            produce(sink)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = sink.error or (exc if isinstance(exc, OSError) else None)
        if cause is not None and not isinstance(exc, SaveError):
            raise save_error(path, cause) from exc
        raise
    fsync_folder(path.parent)
    return path


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
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


def write_with_rescue(path: str | os.PathLike, produce: Callable[[Any], Any], what: str) -> Path:
    """:func:`write_atomically`; when ``path`` cannot be written, write the same bytes to a new
    folder under the temporary directory instead and raise a :class:`SaveError` naming it (or
    saying that ``what`` could be kept nowhere but in memory)."""
    path = Path(path)
    try:
        return write_atomically(path, produce)
    except SaveError as failed:
        cause = failed.__cause__ or failed
        try:
            folder = Path(tempfile.mkdtemp(prefix="tlkit-rescue-"))
        except OSError as exc:
            raise save_error(path, cause, _nowhere(what, exc)) from cause
        try:
            rescued = write_atomically(folder / path.name, produce)
        except SaveError as again:
            shutil.rmtree(folder, ignore_errors=True)
            raise save_error(path, cause, _nowhere(what, again.__cause__ or again)) from cause
        raise save_error(
            path,
            cause,
            f"{what[0].upper()}{what[1:]} was saved to '{rescued}' instead: move it where you "
            "want it.",
        ) from cause


def _nowhere(what: str, exc: BaseException) -> str:
    return (
        f"The temporary folder could not take it either ({plain_reason(exc)}): {what} is still "
        "in this Run only (run.model); free some space and save it again."
    )
