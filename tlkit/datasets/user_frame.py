"""Warnings that point at the user's code: the ``stacklevel`` of the first caller outside tlkit,
its plugins, torch, installed packages and the standard library (a skipped file is found deep inside a DataLoader,
whose own frames would otherwise be blamed)."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path


def _library_dirs() -> tuple[str, ...]:
    import torch

    import tlkit

    dirs = [Path(tlkit.__file__).parent, Path(torch.__file__).parent]
    try:
        import tlkit_strategies

        dirs.append(Path(tlkit_strategies.__file__).parent)
    except ImportError:  # the first-party plugins are optional
        pass
    paths = sysconfig.get_paths()  # the standard library and installed packages (pluggy...)
    dirs += [Path(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    return tuple(str(d.resolve()) for d in dirs)


def user_stacklevel(default: int = 2) -> int:
    """The ``stacklevel`` for a ``warnings.warn`` made by the caller of this function that
    names the first frame outside the libraries; ``default`` when there is none (a DataLoader
    worker process runs no user code)."""
    libraries = _library_dirs()
    frame = sys._getframe(1)  # the function that calls warnings.warn: stacklevel 1
    level = 1
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith("<frozen") and not str(Path(name).resolve()).startswith(libraries):
            return level
        frame = frame.f_back
        level += 1
    return default
