"""Warnings that point at the user's code: the ``stacklevel`` of the first caller outside tlkit,
its plugins, torch, installed packages and the standard library (a skipped file is found deep
inside a DataLoader, whose own frames would otherwise be blamed)."""

from __future__ import annotations

import functools
import sys
import sysconfig
from pathlib import Path
from typing import Any


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    import torch

    paths = sysconfig.get_paths()  # the standard library and installed packages (pluggy...)
    dirs = [Path(__file__).parents[1], Path(torch.__file__).parent]  # tlkit, torch
    dirs += [Path(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    return tuple(str(d.resolve()) for d in dirs)


def _is_library(frame: Any) -> bool:
    """tlkit, its plugins (modules named ``tlkit_...``), torch, installed packages, the
    standard library."""
    module = str(frame.f_globals.get("__name__", ""))
    if module == "tlkit" or module.startswith(("tlkit.", "tlkit_")):
        return True
    name = frame.f_code.co_filename
    return name.startswith("<frozen") or str(Path(name).resolve()).startswith(_library_dirs())


def user_stacklevel(default: int = 2) -> int:
    """The ``stacklevel`` for a ``warnings.warn`` made by the caller of this function that
    names the first frame outside the libraries; ``default`` when there is none (a DataLoader
    worker process runs no user code)."""
    frame = sys._getframe(1)  # the function that calls warnings.warn: stacklevel 1
    level = 1
    while frame is not None:
        if not _is_library(frame):
            return level
        frame = frame.f_back
        level += 1
    return default
