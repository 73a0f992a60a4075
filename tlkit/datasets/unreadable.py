"""Naming the files of a domain that could not be read, and why.

Files are listed when a domain is made and decoded later (in DataLoader workers, which keep no
reasons). When a read fails, the few failed files are decoded again here, in this process, to
say which file failed and why -- for a clear error when none could be read, and for the
``error`` column of prediction tables.
"""

from __future__ import annotations

from collections.abc import Iterable

from tlkit.datasets.domain import DataError, Domain


def read_failures(domain: Domain, indices: Iterable[int]) -> list[tuple[int, str, str]]:
    """``(index, file, reason)`` for each of ``indices`` that cannot be read now; readable ones
    are left out."""
    failures = []
    for i in indices:
        try:
            domain.backing.load(int(i))
        except Exception as exc:  # noqa: BLE001 - any failure to read is reported, not raised
            where = getattr(exc, "source", None) or _describe(domain, int(i))
            failures.append((int(i), str(where), getattr(exc, "reason", None) or str(exc)))
    return failures


def unreadable_error(domain: Domain, tried: int | None = None) -> DataError:
    """The error for a domain none of whose ``tried`` files (all by default) could be read."""
    total = len(domain)
    tried = total if tried is None else min(tried, total)
    what = f"all {total} files" if tried >= total else f"all {tried} files read so far"
    example = read_failures(domain, range(min(total, 3)))
    detail = f" (e.g. '{example[0][1]}': {example[0][2]})" if example else ""
    return DataError(
        f"{what} of domain '{domain.name}' could not be read{detail}. The files changed after "
        "the domain was listed: restore them, or list the data again."
    )


def _describe(domain: Domain, index: int) -> str:
    try:
        return str(domain.backing.describe(index))
    except Exception:  # noqa: BLE001 - a backing without file names
        return f"sample {index}"
