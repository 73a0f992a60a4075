"""What :meth:`tlkit.Run.predict` reads and the table it returns.

Prediction takes a Domain, a folder, a CSV of paths, one image or a list of images. Every
listed file gets a row: a file that cannot be decoded keeps its row, with the reason in the
``error`` column, so a table written to disk accounts for every input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tlkit.datasets.domain import DataError, Domain
from tlkit.datasets.unreadable import read_failures


def prediction_domain(data: Any, tokenizer: Any = None) -> Domain:
    """A Domain from a Domain, a folder, a CSV of paths (column ``path``), an image path or a
    list of image paths; a path that does not exist is named. A model that reads text (its
    backbone keeps a ``tokenizer``) takes a list of raw strings instead of paths."""
    from tlkit.datasets import from_csv, from_folder, from_paths

    if isinstance(data, Domain):
        return data
    if tokenizer is not None and isinstance(data, (list, tuple)):
        if not all(isinstance(t, str) for t in data):
            raise DataError("a text model predicts a list of strings; got other items too.")
        return tokenizer.domain(list(data), name="texts")
    if tokenizer is not None and isinstance(data, str):
        raise DataError("a text model predicts a list of strings; wrap one text: [text].")
    if isinstance(data, (str, Path)):
        p = Path(data).expanduser()
        if p.is_dir():
            return from_folder(p, labels=False, check="none", progress=False)
        if not p.exists():
            raise DataError(f"no such file or folder: '{data}'.")
        if p.suffix.lower() == ".csv":
            return from_csv(p, label_column=None, check="none", progress=False)
        return from_paths([p], name=p.name, check="none", progress=False)
    if isinstance(data, (list, tuple)):
        for item in data:
            if isinstance(item, (str, Path)) and not Path(item).expanduser().exists():
                raise DataError(f"no such file or folder: '{item}'.")
        return from_paths(list(data), check="none", progress=False)
    raise DataError(
        f"predict() takes images as a tensor, a Domain, a folder, a CSV of paths, an image path "
        f"or a list of paths; got {type(data).__name__}."
    )


def unread(domain: Domain, indices: torch.Tensor) -> list[tuple[int, str, str]]:
    """``(index, file, reason)`` of the samples of ``domain`` missing from ``indices``."""
    if domain.in_memory:
        return []
    missing = torch.ones(len(domain), dtype=torch.bool)
    missing[indices] = False
    wanted = missing.nonzero().flatten().tolist()
    found = {i: (i, path, why) for i, path, why in read_failures(domain, wanted)}
    return [found.get(i) or (i, _path(domain, i), "could not be read") for i in wanted]


def _path(domain: Domain, index: int) -> str:
    try:
        return str(domain.paths[index])
    except (DataError, IndexError, TypeError):
        return f"sample {index}"


def prediction_table(
    domain: Domain,
    outputs: torch.Tensor | None,
    indices: torch.Tensor,
    task: str,
    classes: Any,
    top_k: int,
    failures: list[tuple[int, str, str]],
):
    """One row per sample, in the domain's order: ``path`` (``index`` in memory), the
    prediction, and for files an ``error`` column (empty where the file was read)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        raise DataError("predictions as a table need pandas: pip install pandas") from None
    try:
        paths = None if domain.in_memory else domain.paths
    except DataError:  # a dataset object's samples have no paths
        paths = None
    if outputs is None:
        outputs = torch.empty(0, len(classes) or 1)
    order = indices.tolist()
    where = {"path": [paths[i] for i in order]} if paths else {"index": order}
    if task == "regression":
        values = outputs.squeeze(1).tolist() if outputs.shape[1] == 1 else outputs.tolist()
        table = pd.DataFrame({**where, "prediction": values})
    else:
        probs = outputs.softmax(dim=1)
        k = max(1, min(top_k, probs.shape[1]))
        top_p, top_i = probs.topk(k, dim=1)
        names = list(classes) or [str(i) for i in range(probs.shape[1])]
        table = pd.DataFrame(
            {
                **where,
                "label": [names[i] for i in top_i[:, 0].tolist()],
                "class_id": pd.array(top_i[:, 0].tolist(), dtype="Int64"),
                "probability": top_p[:, 0].tolist(),
                "top_labels": [[names[i] for i in row] for row in top_i.tolist()],
                "top_probabilities": top_p.tolist(),
            }
        )
    if domain.in_memory:
        return table
    table["error"] = ""
    if failures:
        key = "path" if paths else "index"
        rows = pd.DataFrame(
            {key: [paths[i] if paths else i for i, _, _ in failures],
             "error": [why for _, _, why in failures]}
        )  # fmt: skip
        position = order + [i for i, _, _ in failures]
        table = pd.concat([table, rows], ignore_index=True)
        table = table.iloc[sorted(range(len(table)), key=position.__getitem__)]
        table = table.reset_index(drop=True)
    return table


def flat_lists(table):
    """The table with list cells (``top_labels``, ``top_probabilities``) joined by ``;``, for
    CSV files, which hold no lists."""
    out = table.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, list)).any():
            out[column] = out[column].map(
                lambda v: ";".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v)
                if isinstance(v, list)
                else ""
            )
    return out
