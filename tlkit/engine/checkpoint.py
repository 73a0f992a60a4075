"""Checkpoints that survive crashes and load safely.

* Written atomically: the bytes go to a temporary file in the same folder, are flushed and
  fsync'ed, and only then renamed over the target (``os.replace`` is atomic on POSIX and Windows),
  so a crash mid-write leaves the previous checkpoint intact.
* Loaded with ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain Python values
  only (no pickled objects), so loading one cannot run code.
* Tagged with a format name and version, so a foreign or corrupt file fails with a clear message.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "tlkit-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, foreign, or does not fit the model."""


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
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a tlkit checkpoint with ``weights_only=True``; every failure names the file and fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; check the path.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"checkpoint '{path}' could not be read ({type(exc).__name__}: {reason}). The file is "
            "corrupt, not a PyTorch file, or holds pickled objects that tlkit will not execute "
            "(it loads with weights_only=True); use another checkpoint (best.pt / last.pt)."
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is not a tlkit checkpoint (no '{FORMAT}' tag). To start from plain "
            "weights, pass them to the backbone: tlkit.fit(..., backbone_weights=path)."
        )
    if data.get("version", 0) > VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {data['version']}, newer than this tlkit "
            f"understands ({VERSION}); upgrade tlkit."
        )
    return data
