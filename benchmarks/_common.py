"""Helpers shared by the benchmark scripts: machine facts, markdown tables, results files.

Not a benchmark itself. Every script prints a markdown table and (for a full run, or when
``--results PATH`` is given) replaces its own section of a markdown results file, leaving the
other sections of that file alone.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
#: Copies of the results files the book quotes, shipped with the package (tlkit.book).
BOOK_RESULTS_DIR = HERE.parent / "tlkit" / "book_results"


def cache_dir() -> Path:
    """Where benchmarks keep the data they generate between runs (``$TLKIT_CACHE/bench``)."""
    env = os.environ.get("TLKIT_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "tlkit"
    return base / "bench"


def setup_torch(device: str = "cpu", threads: int = 2) -> None:
    """Pin CPU threads (every benchmark here is measured with 2 threads on CPU), and line-buffer
    stdout so that progress lines show up in a log file as they happen."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    if device == "cpu" or not torch.cuda.is_available():
        torch.set_num_threads(threads)


def machine_info(device: str = "cpu") -> dict[str, str]:
    """The facts a reader needs to compare a results table with their own machine."""
    info = {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    try:
        import tlkit

        info["tlkit"] = getattr(tlkit, "__version__", "dev")
    except ImportError:  # pragma: no cover - the scripts import tlkit anyway
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device"] = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        info["cuda"] = str(torch.version.cuda)
    else:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        info["device"] = f"{device} ({cpu})"
    try:
        info["load average at start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        pass
    return info


def command_line() -> str:
    """How this script was invoked, as a copy-pasteable command from the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return (
            f"{value:.{digits}g}"
            if abs(value) < 1
            else f"{value:.{digits}f}".rstrip("0").rstrip(".")
        )
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are formatted, strings are kept as they are."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def machine_block(info: dict[str, str], command: str) -> str:
    lines = [f"- {k}: {v}" for k, v in info.items()]
    lines.append(f"- command: `{command}`")
    return "\n".join(lines)


def update_results(path: Path, key: str, title: str, body: str, *, file_title: str) -> Path:
    """Replace the section ``key`` of the markdown file ``path`` (create the file if needed).

    Sections are delimited by ``<!-- begin KEY -->`` / ``<!-- end KEY -->`` so that re-running
    one configuration leaves the others untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    section = f"{begin}\n## {title}\n\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else f"# {file_title}\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
    shipped = BOOK_RESULTS_DIR / path.name
    if path.resolve().parent == RESULTS_DIR.resolve() and shipped.exists():
        shipped.write_text(text)  # the copy the package ships for the book's chapters
    return path


def write_run(path: Path, body: str, *, quick: bool, file_title: str) -> Path:
    """Write a script's whole-run section: ``full`` ("Latest full run") or ``quick``."""
    key, title = ("quick", "Quick run") if quick else ("full", "Latest full run")
    update_results(path, key, title, body, file_title=file_title)
    print(f"\nwrote {path}")
    return path


def results_path(arg: str | None, script: str, quick: bool) -> Path | None:
    """Where to write: ``--results PATH`` if given; the default file for a full run; nowhere for
    a ``--quick`` smoke run (so that a test never overwrites the measured results)."""
    if arg:
        return Path(arg)
    if quick:
        return None
    return RESULTS_DIR / f"{script}.md"


# -- stored runs: a JSON-lines file of finished runs, so a re-run trains only what is missing --
def key_text(key: dict[str, Any]) -> str:
    """A run key as the text the runs file is looked up by (sorted, so key order is free)."""
    return json.dumps(key, sort_keys=True)


def load_runs(path: Path) -> dict[str, dict[str, Any]]:
    """``{key_text(record["key"]): record}`` of a runs file (empty when it does not exist); a
    later line for the same key wins."""
    runs: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                runs[key_text(record["key"])] = record
    return runs


def append_run(path: Path, record: dict[str, Any]) -> None:
    """Add one finished run (a dict with its ``"key"``) to the runs file."""
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")
