"""A CSV file or DataFrame of image paths (and labels or regression targets) as a lazy domain.

The manifests people bring are messy: a spreadsheet saved as latin-1, a binary file with a
``.csv`` name, an empty cell in the path column, a float column (a price, a score) that would
silently become one class per value. Each of these is refused here with the row, the column and
the fix, before any image is read.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .decode import DEFAULT_MAX_PIXELS
from .domain import DataError, Domain
from .files import _common, _file_domain, _finish

#: A numeric label column with fractions and at least this share of distinct values is a
#: regression target, not a list of class names.
DISTINCT_SHARE = 0.5


@dataclasses.dataclass
class _Table:
    columns: list[str]
    get: dict[str, list[Any]]
    rows: list[str]  # how each data row is named in messages
    root: str
    name: str


def _read_csv(file: Path, encoding: str | None) -> _Table:
    raw = file.read_bytes()
    if b"\0" in raw[:8192]:
        raise DataError(
            f"from_csv: '{file}' is not a text CSV (it holds binary data: an image, a "
            "spreadsheet .xlsx or a compressed file?). Export the table as CSV, or read it "
            "with pandas and pass the DataFrame."
        )
    try:
        text = raw.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 1]
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"from_csv: '{file}' is not UTF-8 (byte {bad!r} on line {line}). Pass the file's "
            "encoding, e.g. encoding='latin-1' or encoding='cp1252' for a spreadsheet saved on "
            "Windows, or re-save it as UTF-8."
        ) from e
    except LookupError as e:
        raise DataError(f"from_csv: unknown encoding={encoding!r}; e.g. 'utf-8', 'latin-1'.") from e
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, names = [], []
    for r in reader:
        rows.append(r)
        names.append(f"row {reader.line_num} (line {reader.line_num} of '{file.name}')")
    columns = list(reader.fieldnames or [])
    return _Table(columns, {c: [r.get(c) for r in rows] for c in columns}, names,
                  str(file.parent), file.stem)  # fmt: skip


def _read_frame(df: Any, wanted: Sequence[str | None]) -> _Table:
    columns = [str(c) for c in df.columns]
    get = {c: df[c].tolist() for c in columns if c in wanted}
    rows = [f"row {i!r} (DataFrame index {i!r})" for i in df.index]
    return _Table(columns, get, rows, "", "dataframe")


def _missing(v: Any) -> bool:
    return (
        v is None
        or (isinstance(v, float) and np.isnan(v))
        or (isinstance(v, str) and not v.strip())
    )


def _paths(values: list[Any], rows: list[str], column: str) -> list[str]:
    out = []
    for v, row in zip(values, rows):
        if _missing(v):
            raise DataError(
                f"from_csv: {row} has no path (empty or NaN in column {column!r}). Fill it in, "
                "or drop the row (df.dropna(subset=[...]))."
            )
        if not isinstance(v, (str, os.PathLike)):
            raise DataError(
                f"from_csv: {row} has {v!r} in column {column!r}, which is not a file path."
            )
        out.append(os.fspath(v))
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def _looks_like_regression(values: list[Any]) -> bool:
    """Numbers with fractions, mostly distinct: a measurement, not class ids or names."""
    present = [v for v in values if not _missing(v)]
    numbers = [_number(v) for v in present]
    if not present or any(n is None or not np.isfinite(n) for n in numbers):
        return False
    if all(float(n).is_integer() for n in numbers):  # type: ignore[union-attr]
        return False
    return len(set(numbers)) >= max(2, DISTINCT_SHARE * len(numbers))


def _targets(values: list[Any], rows: list[str], column: str) -> torch.Tensor:
    out = []
    for v, row in zip(values, rows):
        if _missing(v):
            raise DataError(
                f"from_csv: {row} has no target in column {column!r}; every sample of a "
                "regression domain needs one. Fill it in, or drop the row."
            )
        n = _number(v)
        if n is None or not np.isfinite(n):
            raise DataError(
                f"from_csv: {row} has {v!r} in column {column!r}; regression targets must be "
                "finite numbers."
            )
        out.append(n)
    return torch.tensor(out, dtype=torch.float32)


def _task(task: str | None, values: list[Any] | None, column: str | None) -> str:
    if task is not None and task not in ("classification", "regression"):
        raise DataError(f"task must be 'classification' or 'regression', got {task!r}.")
    if task == "regression" and values is None:
        raise DataError("from_csv: task='regression' needs targets; pass label_column=...")
    if task is None and values is not None and _looks_like_regression(values):
        raise DataError(
            f"from_csv: column {column!r} holds mostly distinct fractional numbers, so it looks "
            "like a regression target: pass task='regression'. To treat each value as a class "
            "name anyway, pass task='classification'."
        )
    return task or "classification"


def from_csv(
    csv_or_dataframe: str | os.PathLike | Any,
    *,
    path_column: str = "path",
    label_column: str | None = "label",
    task: str | None = None,
    root: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    name: str | None = None,
    image_size: int | None = None,
    in_memory: bool = False,
    strict: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    check: str = "sample",
    progress: bool = True,
    encoding: str | None = None,
) -> Domain:
    """A CSV file or pandas DataFrame of image paths (and labels) as a lazy domain.

    ``path_column`` holds the file paths, relative to ``root`` (default: the CSV's folder; the
    current directory for a DataFrame) unless absolute; every row needs one. ``label_column``
    holds class names or integer ids (``None``: no labels; an empty cell leaves that sample
    unlabelled), or with ``task="regression"`` a number per row (float targets). A column of
    mostly distinct fractional numbers is refused without ``task=``, rather than made into one
    class per value. Classes are ``classes=[...]`` when given, else the sorted distinct labels
    (numerically when all are integers). ``encoding`` is the file's text encoding (default
    UTF-8, with or without a byte-order mark). Other options as in :func:`from_folder`.
    """
    if isinstance(csv_or_dataframe, (str, os.PathLike)):
        file = Path(csv_or_dataframe).expanduser()
        if not file.is_file():
            raise DataError(f"from_csv: '{file}' is not a file; pass a CSV path or a DataFrame.")
        table = _read_csv(file, encoding)
    elif hasattr(csv_or_dataframe, "columns") and hasattr(csv_or_dataframe, "__getitem__"):
        table = _read_frame(csv_or_dataframe, (path_column, label_column))
    else:
        kind = type(csv_or_dataframe).__name__
        raise DataError(f"from_csv takes a CSV path or a pandas DataFrame, got {kind}.")
    for col in (path_column, label_column):
        if col is not None and col not in table.columns:
            raise DataError(
                f"from_csv: no column {col!r}; the columns are {table.columns}. Pass "
                "path_column= / label_column= (label_column=None for unlabelled images)."
            )
    paths = _paths(table.get[path_column], table.rows, path_column)
    labels = table.get[label_column] if label_column is not None else None
    task = _task(task, labels, label_column)
    options = dict(
        root=os.fspath(root) if root is not None else table.root, classes=classes,
        name=name or table.name, image_size=image_size, max_pixels=max_pixels, progress=progress,
        what="from_csv",
    )  # fmt: skip
    if task == "classification":
        return _file_domain(paths, labels, in_memory=in_memory, strict=strict, check=check,
                            **options)  # fmt: skip
    _common("from_csv", image_size, max_pixels, check)
    y = _targets(labels or [], table.rows, str(label_column))
    lazy = _file_domain(paths, None, in_memory=False, strict=strict, check="none", **options)
    domain = dataclasses.replace(lazy, labels=y, clean_labels=y, classes=(), task="regression")
    return _finish(domain, check=check, strict=strict, in_memory=in_memory, progress=progress)
