"""What the book's chapters need besides tlkit itself: the benchmark tables they quote, and prose
that shows computed numbers the same way in every front end.

Why it lives in the package: a chapter handed out alone (one ``.ipynb`` in an empty folder) must
still run, so the multi-seed tables the chapters quote ship with tlkit (``tlkit/book_results/``,
kept identical to ``benchmarks/results/`` by the benchmarks and by a test), and the numbers reach
the prose through cell output (:func:`prose` displays Markdown), which plain JupyterLab, VS Code,
Colab and the built book all render. MyST-NB's ``{glue:text}`` role is replaced only when the
book is built; everywhere else a student would read the raw role.

A chapter computes or reads a number, names it with :func:`quote`, and a later prose cell refers
to it as ``{name:.1f}`` (the name, a colon, a format spec)::

    quote("so_target", 100 * run.last["target_accuracy"])
    prose(r'''Only {so_target:.0f}% of the handwritten digits are right.''')

Claims about a single training run should be checked against the spread the benchmarks measured
over seeds (:func:`seed_values`, :func:`within_seeds`), not against one seed's value: per-seed
numbers change with the CPU and the thread count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

#: The benchmark results files the book quotes, shipped with the package.
RESULTS = Path(__file__).resolve().parent / "book_results"
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
#: ``{name:format}`` in prose: a name (letters, digits, ``_``, ``.``), a colon, a format spec. LaTeX groups such as
#: ``\mathcal{S}`` have no colon, so they are left alone.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*):([^{}\s]*)\}")

#: Numbers named by :func:`quote` in this kernel, for :func:`prose`.
QUOTED: dict[str, float] = {}


def results_table(file: str, heading: str, *, section: str | None = None) -> pd.DataFrame:
    """The first markdown table at or after the first line containing ``heading`` in the
    shipped copy of ``benchmarks/results/<file>``, as strings indexed by its first column.

    ``section`` limits the search to a ``<!-- begin section -->`` ... ``<!-- end section -->``
    block (the results files keep a full run and quick runs apart this way).
    """
    path = RESULTS / file
    if not path.exists():
        shipped = sorted(p.name for p in RESULTS.glob("*.md"))
        raise FileNotFoundError(f"tlkit ships no results file {file!r}; it has {shipped}")
    text = path.read_text(encoding="utf-8")
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


def seed_values(cell: str) -> list[float]:
    """The per-seed values of a results cell such as ``"47.1 42.6 22.3"``."""
    values = [float(x) for x in _NUMBER.findall(cell)]
    if not values:
        raise ValueError(f"{cell!r} holds no per-seed values")
    return values


def within_seeds(value: float, seeds: Sequence[float], margin: float) -> bool:
    """Whether ``value`` lies within the range the seeds spanned, widened by ``margin`` on each
    side: what a single run on another machine (another draw, in effect) can be expected to
    give."""
    return min(seeds) - margin <= value <= max(seeds) + margin


def quote(name: str, value: float) -> None:
    """Name ``value`` for the prose cells below (``{name:.1f}``). Returns nothing, so that a
    cell ending with ``quote(...)`` shows no extra output."""
    if not re.fullmatch(r"[A-Za-z_][\w.]*", name):
        raise ValueError(f"quote() needs a name of letters, digits, '_' and '.', got {name!r}")
    QUOTED[name] = float(value)


def fill(text: str, values: dict[str, float] | None = None) -> str:
    """``text`` with every ``{name:format}`` replaced by the quoted value, formatted."""
    values = QUOTED if values is None else values

    def one(match: re.Match[str]) -> str:
        name, spec = match.groups()
        if name not in values:
            raise KeyError(f"the prose quotes {name!r}, which no cell above passed to quote()")
        return format(values[name], spec)

    return PLACEHOLDER.sub(one, text)


def prose(text: str) -> None:
    """Display ``text`` as Markdown with its ``{name:format}`` numbers filled in."""
    from IPython.display import Markdown, display

    display(Markdown(fill(text).strip()))


__all__ = [
    "QUOTED",
    "RESULTS",
    "fill",
    "number",
    "prose",
    "quote",
    "results_table",
    "seed_values",
    "within_seeds",
]
