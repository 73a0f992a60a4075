"""The test suite's shared setup: every test runs torch on one thread (tests/conftest.py), and
that rule lives in one fixture, not in copies per test file."""

from __future__ import annotations

from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent


def test_a_test_runs_on_one_thread():
    assert torch.get_num_threads() == 1


def test_no_test_module_redefines_the_one_thread_fixture():
    copies = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("*.py")
        if p.name not in ("conftest.py", Path(__file__).name) and "def _one_thread" in p.read_text()
    ]
    assert copies == [], f"use the one in tests/conftest.py instead: {copies}"
