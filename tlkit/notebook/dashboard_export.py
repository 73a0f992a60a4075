"""Writing the dashboard's runs to files: a CSV of every epoch and the figures as PNG.

Why a folder under the notebook's working directory by default: that is the folder JupyterLab's
file browser shows next to the notebook, and it outlives the kernel (a temporary folder is
neither visible nor kept).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tlkit.notebook.dashboard_runs import RunRecord

#: The key of a run's source -> target grid (PNG bytes) in ``RunRecord.extra``.
GRID_KEY = "source_to_target_png"


def default_export_folder(base: str | Path | None = None) -> Path:
    """``<base>/tlkit-export-YYYYmmdd-HHMMSS`` (``base``: the working directory), a new folder
    per export so that an earlier export is never overwritten."""
    root = Path(base) if base is not None else Path.cwd()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, n = root / f"tlkit-export-{stamp}", 1
    while out.exists():
        n += 1
        out = root / f"tlkit-export-{stamp}-{n}"
    return out


def export_runs(
    records: Sequence[RunRecord],
    folder: str | Path,
    figures: Mapping[str, bytes] = {},  # noqa: B006 - read only
) -> list[Path]:
    """Write ``histories.csv`` (one row per run and epoch), each figure of ``figures`` as
    ``<name>.png``, and each run's source -> target grid as ``run-<N>-source_to_target.png``.

    Returns the files written. Raises ``RuntimeError`` when no run has finished an epoch.
    """
    if not any(r.history for r in records):
        raise RuntimeError("nothing to export yet: train a run for at least one epoch.")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "histories.csv"]
    keys: list[str] = []
    for r in records:
        for row in r.history:
            keys += [k for k in row if k not in keys]
    with written[0].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "label", "dataset", *keys, "epoch_seconds"])
        for r in records:
            for i, row in enumerate(r.history):
                secs = r.epoch_seconds[i] if i < len(r.epoch_seconds) else ""
                writer.writerow(
                    [r.number, r.label, r.dataset, *(row.get(k, "") for k in keys)] + [secs]
                )
    for name, png in figures.items():
        if png:
            (out / f"{name}.png").write_bytes(png)
            written.append(out / f"{name}.png")
    for r in records:
        grid = r.extra.get(GRID_KEY)
        if grid:
            path = out / f"run-{r.number}-source_to_target.png"
            path.write_bytes(grid)
            written.append(path)
    return written
