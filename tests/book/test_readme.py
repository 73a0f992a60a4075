"""README.md's two commands are what CI and users run: keep them true."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, re.S)


def test_readme_has_the_demo_and_the_test_command():
    demo, tests = readme_commands()
    for command in (demo, tests):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e"), command
    assert demo.endswith("tlkit demo")
    assert "-m pytest -q &&" in tests and "--nbval-lax" in tests and tests.endswith("notebooks/")
    assert "vendor.py" not in tests  # the book's JavaScript is committed: CI fetches nothing


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = readme_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines, "README.md's test command and .ci/run disagree"


def _load_notebook_conftest():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_conftest", ROOT / "notebooks" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nbval_kernels_get_one_thread_unless_told(monkeypatch):
    """The notebooks' stored numbers were computed with one thread (see notebooks/conftest.py);
    TLKIT_NOTEBOOK_THREADS checks the chapters at another thread count."""
    monkeypatch.delenv("TLKIT_NOTEBOOK_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    module = _load_notebook_conftest()
    assert os.environ["OMP_NUM_THREADS"] == "1" and module.OTHER_ENV["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("TLKIT_NOTEBOOK_THREADS", "4")
    module = _load_notebook_conftest()
    assert os.environ["OMP_NUM_THREADS"] == "4" and module.OTHER_ENV["OMP_NUM_THREADS"] == "4"
