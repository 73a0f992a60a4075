"""A chapter handed out alone runs: one ``.ipynb`` copied into an empty folder, re-executed under
nbval at one thread, with nothing from the repository around it (no ``notebooks/conftest.py``,
no ``benchmarks/results/``, no pytest configuration). What a chapter quotes must ship with tlkit."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
#: The shortest chapter (about 30 s at one thread): it trains, writes and tests a plugin package.
CHAPTER = "08_plugins.ipynb"
CHAPTERS = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))
#: Chapters whose first code cell says how to install tlkit.
WITH_INSTALL_HINT = CHAPTERS  # every chapter: a handed-out notebook says how to install tlkit


def _code_cells(name: str) -> list[str]:
    cells = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _code_lines(source: str) -> list[str]:
    """The lines of a code cell that run: no comments, and nothing of a ``prose(...)`` cell,
    whose text may name a results file for the reader."""
    if source.startswith("prose("):
        return []
    return [line for line in source.splitlines() if not line.lstrip().startswith("#")]


@pytest.mark.slow
def test_a_chapter_copied_alone_into_an_empty_folder_runs_under_nbval(tmp_path):
    folder = tmp_path / "handed-out"
    folder.mkdir()
    shutil.copy(NOTEBOOKS / CHAPTER, folder / CHAPTER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # tlkit comes from the installed package, nothing else
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest",
         "--rootdir", str(folder), "--confcutdir", str(folder),
         "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=300", CHAPTER],
        cwd=folder, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout[-2000:]
    # the run left its files in the temporary folders it made, not next to the notebook
    assert sorted(p.name for p in folder.iterdir()) == [CHAPTER]


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_reads_no_file_from_the_repository(name):
    """Relative paths such as ``../benchmarks/results`` exist only in a clone; a chapter quotes
    the benchmark tables through ``tlkit.book``, which ships them."""
    for source in _code_cells(name):
        code = _code_lines(source)
        for marker in ("../", "benchmarks/results", "bookdata"):
            assert not any(marker in line for line in code), f"{name} reads {marker!r}"


@pytest.mark.parametrize("name", WITH_INSTALL_HINT)
def test_first_code_cell_says_how_to_install_tlkit(name):
    first = _code_cells(name)[0]
    assert "except ImportError" in first, f"{name}: the first code cell has no install hint"
    assert "pip install tlkit" in first and "pip install -e ." in first, first
    assert first.index("import tlkit") < first.index("except ImportError")
