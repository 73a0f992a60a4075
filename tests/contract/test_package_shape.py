"""What keeps the code readable for whoever carries it on: short modules, and comments that say
why the code is as it is rather than which ticket changed it (history lives in git)."""

from __future__ import annotations

import re
from pathlib import Path

import tlkit

REPO = Path(tlkit.__file__).resolve().parents[1]
PACKAGES = (REPO / "tlkit", REPO / "plugins")
MAX_LINES = 500
TICKET = re.compile(r"\bissue\s*#?\d+", re.IGNORECASE)


def python_files(*roots: Path) -> list[Path]:
    return sorted(f for root in roots for f in root.rglob("*.py") if ".venv" not in f.parts)


def test_no_module_of_the_package_or_its_plugins_is_over_500_lines():
    files = python_files(*PACKAGES)
    assert len(files) > 50  # the walk found the package
    long = {
        str(f.relative_to(REPO)): n
        for f in files
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (at most {MAX_LINES} lines each): {long}"


def test_code_and_tests_do_not_cite_issue_numbers():
    roots = (*PACKAGES, REPO / "tests")
    cited = [
        f"{f.relative_to(REPO)}:{i}"
        for f in python_files(*roots)
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if TICKET.search(line)
    ]
    assert not cited, f"say why, not which issue: {cited}"
