"""The book's per-chapter timing table (book/intro.md, "Running the book"): one row per notebook,
each a measured CPU time, so a student can plan a lab and a new chapter cannot go unmeasured."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INTRO = ROOT / "book" / "intro.md"
ROW = re.compile(
    r"^\|\s*\{doc\}`\.\./notebooks/(?P<stem>[^`]+)`\s*\|\s*(?P<cpu>[^|]+)\|"
    r"(?:\s*(?P<seconds>\d+) s\s*\|)?",
    re.M,
)


def timing_rows(*, seconds: bool = False) -> dict[str, str]:
    """Each chapter's CPU-time cell ("under 1 min"), or with ``seconds=True`` its measured
    seconds as written ("52"; ``None`` where the row has none)."""
    text = INTRO.read_text(encoding="utf-8")
    start = text.find("\n## Running the book")
    assert start != -1, "book/intro.md needs a '## Running the book' section with the table"
    end = text.find("\n## ", start + 1)
    section = text[start:] if end == -1 else text[start:end]
    rows: dict[str, str] = {}
    for match in ROW.finditer(section):
        assert match["stem"] not in rows, f"{match['stem']} has two rows"
        rows[match["stem"]] = match["seconds"] if seconds else match["cpu"].strip()
    return rows


def test_every_notebook_has_one_row_in_the_timing_table():
    stems = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    rows = timing_rows()
    assert set(rows) == stems, (
        f"missing: {sorted(stems - set(rows))}, unknown: {sorted(set(rows) - stems)}"
    )


def test_each_row_states_a_cpu_time_in_minutes():
    for stem, cpu in timing_rows().items():
        assert re.fullmatch(r"about \d+(\.\d)? min|under 1 min", cpu), f"{stem}: {cpu!r}"


def minutes_cell(seconds: int) -> str:
    """What a row's first column says for a measured CPU time."""
    return "under 1 min" if seconds < 60 else f"about {seconds / 60:.1f} min"


def test_each_rows_minutes_follow_its_measured_seconds():
    measured = timing_rows(seconds=True)
    for stem, cpu in timing_rows().items():
        assert measured[stem] is not None, f"{stem}: end the row with the measured seconds ('52 s')"
        assert cpu == minutes_cell(int(measured[stem])), f"{stem}: {cpu!r} for {measured[stem]} s"


def spoken(cpu: str) -> str:
    """A table cell as prose: "under 1 min" -> "under a minute", "about 1.2 min" -> "about 1.2
    minutes"."""
    return "under a minute" if cpu == "under 1 min" else cpu.replace(" min", " minutes")


def test_each_chapter_opens_with_the_time_the_table_gives_it():
    import json

    for stem, cpu in timing_rows().items():
        notebook = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
        first = " ".join("".join(notebook["cells"][0]["source"]).split())
        assert f"{spoken(cpu)} of CPU time at one thread" in first, (
            f"{stem}: its first cell should say its cells take {spoken(cpu)} of CPU time at one "
            "thread, as book/intro.md's table does"
        )
