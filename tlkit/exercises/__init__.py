"""Exercises a student can check: each chapter's exercises, their checks and solutions.

A chapter's exercise is a stub cell (``answer = ...``) and a check cell::

    answer = 2 * (1 - 2 * (1 - alignment["domain classifier acc."]))    # the student's code
    tlkit.exercises.check("6.1", answer, alignment=alignment)            # ✓ 6.1 correct

The check recomputes what it can from the chapter's objects passed as keywords and compares
with tolerances (a notebook re-runs on other CPUs, where the last digits differ), or checks
relations that hold whatever the seed. A wrong answer gets a hint that helps without giving
the answer away; an unfilled stub prints "not attempted yet" and never fails, so the handed-out
notebook runs from top to bottom. :func:`solution` shows the author's solution on request: it
is not in the notebook, so it does not show before it is asked for.
"""

from __future__ import annotations

import builtins
from typing import Any

from tlkit.exercises import ch01, ch02, ch03, ch04, ch05, ch06, ch06b, ch07, ch08, ch09, ch10  # noqa: F401
from tlkit.exercises import strategies as _strategies  # noqa: F401
from tlkit.exercises._core import EXERCISES, Check, Exercise, Solution, Wrong

__all__ = ["Check", "Solution", "check", "list", "solution"]


def list(chapter: str | int | None = None) -> dict[str, str]:  # noqa: A001 - the API's name
    """The exercises' ids and titles, ``{"6.1": "Proxy A-distance", ...}``; ``chapter``
    (``6``, ``"6b"`` or ``"S"``) keeps one chapter's."""
    prefix = None if chapter is None else f"{chapter}."
    return {
        id: ex.title for id, ex in EXERCISES.items() if prefix is None or id.startswith(prefix)
    }


def _get(id: str) -> Exercise:
    if id not in EXERCISES:
        raise KeyError(
            f"no exercise {id!r}; known ids: {', '.join(EXERCISES)} (tlkit.exercises.list())"
        )
    return EXERCISES[id]


def check(id: str, answer: Any, **context: Any) -> Check:
    """Check ``answer`` to exercise ``id``; the chapter objects it needs come as keywords.

    Returns a :class:`Check` (``.passed``, ``.hint``) that a notebook shows as one line. The
    unfilled stub (``answer = ...``) is "not attempted yet", never an error.
    """
    exercise = _get(id)
    if answer is Ellipsis:
        return Check(id, passed=False, hint="not attempted yet", attempted=False)
    missing = [name for name in exercise.needs if name not in context]
    if missing:
        given = ", ".join(f"{n}={n}" for n in exercise.needs)
        raise TypeError(
            f"check({id!r}, answer) also needs {', '.join(missing)}: call "
            f"tlkit.exercises.check({id!r}, answer, {given})"
        )
    try:
        exercise.grade(answer, **{name: context[name] for name in exercise.needs})
    except Wrong as wrong:
        return Check(id, passed=False, hint=str(wrong))
    except Exception as exc:  # noqa: BLE001 - a malformed answer is a hint, not a traceback
        return Check(
            id, passed=False, hint=f"could not check this answer ({type(exc).__name__}: {exc})"
        )
    return Check(id, passed=True)


def solution(id: str) -> Solution:
    """The solution of exercise ``id`` as source text; a notebook shows it as code.

    It assigns ``answer`` from the chapter's objects, as the stub asks."""
    text = Solution(_get(id).solution)
    text.exercise_id = id
    return text


def __dir__() -> builtins.list[str]:
    return sorted(__all__)
