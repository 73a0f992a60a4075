"""What the ``tlkit`` command reads: ``--set`` values and other YAML-valued flags, ``--data`` (a
bundled name, a folder of images or a CSV manifest) with its ``--task``, and the held-out split
``tlkit fit`` makes of a user's own data.

Every problem becomes a one-line :class:`ConfigError` or :class:`DataError` naming the fix, which
the command prints as ``tlkit: error: ...`` with exit status 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tlkit.datasets import DataError, Domain, DomainPair
from tlkit.errors import ConfigError

#: The share of a user's folder or CSV that ``tlkit fit`` holds out for validation by default.
DEFAULT_VAL_SPLIT = 0.2
#: What ``--task`` accepts: the kind of label a user's CSV holds.
TASKS = ("classification", "regression")


def parse_set(item: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``: the value is a YAML scalar or list (numbers, booleans, null,
    ``[a, b]``); safe loading only, so a tag such as ``!!python/name`` is refused, never run."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got '{item}'.")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        if "tag" in problem:
            problem = f"{problem} (YAML tags are not allowed)"
        raise ConfigError(
            f"--set {item}: not a valid value ({problem}); quote text, e.g. --set "
            f"{key.strip()}='\"{text}\"', or give a number, true/false, null or [a, b]."
        ) from None
    return key.strip(), value


def parse_flag(flag: str, text: str) -> Any:
    """A flag's value read as YAML (``balanced``, ``[1, 2]``, ``{cat: 2}``), safely."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(
            f"{flag} {text}: not a valid value ({problem}); give e.g. balanced, [1, 2, 0.5] or "
            "'{cat: 2, dog: 1}'."
        ) from None


def data_task(value: Any) -> str | None:
    """``--task``: ``None`` (the data's own), ``"classification"`` or ``"regression"``."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in TASKS:
        raise ConfigError(
            f"--task {value}: use 'classification' (a class per row) or 'regression' (a number "
            "per row)."
        )
    return text


def val_split(value: Any) -> float:
    """``--val-split``: a fraction in [0, 1) of the data held out; 0 turns it off."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = -1.0
    if not 0.0 <= out < 1.0:
        raise ConfigError(
            f"--val-split {value} is not a fraction in [0, 1): use e.g. 0.2 to hold out 20% for "
            "validation, or 0 to train on everything."
        )
    return out


def _missing(text: str) -> ConfigError:
    return ConfigError(
        f"no such file or folder: '{text}'; give a folder of class folders, a CSV of path,label "
        "rows, or a bundled dataset name (tlkit datasets)."
    )


def _looks_like_a_path(text: str) -> bool:
    return (
        os.sep in text
        or "/" in text
        or text.startswith((".", "~"))
        or Path(text).suffix.lower() in (".csv", ".jpg", ".jpeg", ".png")
    )


def user_domain(text: str, *, labels: bool = True, task: str | None = None) -> Domain | None:
    """The folder or CSV at ``text`` as a lazy Domain, ``None`` for a bundled dataset name; a
    path that does not exist is named as missing. ``task`` says what a CSV's labels are."""
    import tlkit

    if not isinstance(text, str):
        return None
    p = Path(text).expanduser()
    if p.is_dir():
        if labels:
            return tlkit.datasets.from_folder(p, task=task or "classification")
        return tlkit.datasets.from_folder(p, labels=False, check="none", progress=False)
    if p.is_file():
        if p.suffix.lower() == ".csv":
            label_column = "label" if labels else None
            task = task if labels else None
            return tlkit.datasets.from_csv(p, label_column=label_column, task=task, progress=False)
        if not labels:
            return tlkit.datasets.from_paths([p], name=p.name, check="none", progress=False)
        raise ConfigError(
            f"'{text}' is a file; --data takes a folder of class folders, a CSV of path,label "
            "rows, or a bundled dataset name (tlkit datasets)."
        )
    if text in tlkit.datasets.names() or ("->" in text and not _looks_like_a_path(text)):
        return None
    if _looks_like_a_path(text):
        raise _missing(text)
    return None  # tlkit.datasets.load names the known datasets


def training_data(
    text: Any, split: float, seed: int, *, task: str | None = None
) -> tuple[Any, str | None]:
    """``--data`` for ``tlkit fit``: a bundled name stays a name; a folder or CSV is split into
    a seeded train / validation pair, stratified by class for classification (``split`` held
    out; 0: no validation). Returns the data and a line saying what was held out (``None`` when
    nothing was). ``task`` (``--task``) says what a CSV's labels are."""
    domain = user_domain(text, task=task) if isinstance(text, str) else None
    if domain is None:
        if task is not None:
            raise ConfigError(
                f"--task applies to a folder or CSV of your own; the bundled dataset '{text}' "
                "knows its task. Leave --task out."
            )
        return text, None
    if split == 0:
        return domain, None
    if len(domain) < 2:
        raise DataError(
            f"'{text}' has {len(domain)} image(s): too few to hold any out; add images or pass "
            "--val-split 0."
        )
    train, held_out = domain.split(split, seed=seed)
    how = "stratified by class" if domain.task == "classification" else "at random"
    line = (
        f"held out {split:.0%} of '{domain.name}' for validation ({len(held_out)} of "
        f"{len(domain)} files, {how}, seed {seed}; --val-split changes it)"
    )
    return DomainPair(train, held_out, name=domain.name), line


def evaluation_data(text: str, *, task: str | None = None) -> Domain | DomainPair:
    """``--data`` for ``tlkit evaluate``: every file of a folder or CSV (its labels read as the
    run's ``task`` says), or a bundled task."""
    import tlkit

    domain = user_domain(text, task=task if text.lower().endswith(".csv") else None)
    return domain if domain is not None else tlkit.datasets.load(text)


def prediction_data(paths: list[str]) -> Domain:
    """What ``tlkit predict`` reads: one folder, one CSV of paths, or image files."""
    import tlkit

    for text in paths:
        if not Path(text).expanduser().exists():
            raise _missing(text)
    if len(paths) == 1:
        domain = user_domain(paths[0], labels=False)
        if domain is not None:
            return domain
    return tlkit.datasets.from_paths(list(paths), check="none", progress=False)


def remove_lock(folder: str | os.PathLike | None) -> None:
    """Remove a checkpoint folder's lock file once no run holds it (after Ctrl-C)."""
    if not folder:
        return
    from tlkit.engine.checkpoint import LOCK_NAME, FolderLock

    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return
    lock = FolderLock(folder)
    try:
        lock.acquire()
    except (ConfigError, OSError):
        return  # another run holds it: leave it
    try:
        path.unlink(missing_ok=True)
    finally:
        lock.release()
