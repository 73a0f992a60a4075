"""Numbers the book quotes, read from where they are measured.

Why: prose that types a number by hand goes stale the day a benchmark is re-run or the engine
changes (chapter 6 once said "± 14" where its data said 15.4). The chapters therefore read
benchmark numbers from ``benchmarks/results/*.md`` with :func:`results_table`, compute the others
in cells, and hand both to the prose with :func:`quote` (MyST-NB's ``glue``); the markdown refers
to them as ``{glue:text}`name:.1f```. Re-executing a chapter updates its prose.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def results_table(file: str, heading: str, *, section: str | None = None) -> pd.DataFrame:
    """The first markdown table at or after the first line containing ``heading`` in
    ``benchmarks/results/<file>``, as strings indexed by its first column.

    ``section`` limits the search to a ``<!-- begin section -->`` ... ``<!-- end section -->``
    block (the results files keep a full run and quick runs apart this way).
    """
    text = (RESULTS / file).read_text(encoding="utf-8")
    if section is not None:
        begin, end = f"<!-- begin {section} -->", f"<!-- end {section} -->"
        if begin not in text:
            raise KeyError(f"{file} has no section '{section}'")
        text = text.split(begin, 1)[1].split(end, 1)[0]
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if heading in line), None)
    if start is None:
        raise KeyError(f"{file} has no line containing {heading!r}")
    rows = []
    first = start if lines[start].startswith("|") else start + 1  # the heading may be the header
    for line in lines[first:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    if len(rows) < 3:
        raise KeyError(f"no table after {heading!r} in {file}")
    header, body = rows[0], rows[2:]  # rows[1] is the |---| line
    return pd.DataFrame(body, columns=header).set_index(header[0])


def number(cell: str, which: int = 0) -> float:
    """The ``which``-th number of a table cell: ``number("37.4 ± 12.8")`` is 37.4,
    ``number("37.4 ± 12.8", 1)`` the spread, 12.8."""
    found = _NUMBER.findall(cell)
    if len(found) <= which:
        raise ValueError(f"{cell!r} has no number #{which}")
    return float(found[which])


def quote(name: str, value: float) -> None:
    """Make ``value`` quotable in the chapter's prose as ``{glue:text}`name:.1f```.

    Returns nothing, so that a cell ending with ``quote(...)`` shows no extra output."""
    try:
        from myst_nb import glue
    except ImportError:  # running the notebook without the book's tooling: nothing to glue into
        return
    glue(name, float(value), display=False)


__all__ = ["RESULTS", "number", "quote", "results_table"]
