"""The machinery behind :mod:`tlkit.exercises`: the exercise registry, the result of a check,
and small helpers the chapters' graders share.

A grader receives the student's answer and the chapter objects it needs (``context``) and
either returns (the answer is right) or raises :class:`Wrong` with a hint. Hints say what to
look at, never the expected value: a student who reads one still has to do the exercise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: Every exercise, by id ("6.1"), in the order the chapters define them.
EXERCISES: dict[str, Exercise] = {}


class Wrong(Exception):
    """Raised by a grader: the answer is not right yet; the message is the hint."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: what ``check`` needs to grade it and the solution shown on request.

    Attributes:
        id: ``"<chapter>.<n>"``, as the notebook's check cell names it.
        title: a few words, for :func:`tlkit.exercises.list`.
        needs: the names of the chapter objects ``check`` must be given as keywords.
        solution: source code that assigns ``answer`` (it may use the names in ``needs`` and
            the chapter's imports).
        grade: ``grade(answer, **context)``; raises :class:`Wrong` with a hint.
    """

    id: str
    title: str
    needs: tuple[str, ...]
    solution: str
    grade: Callable[..., None]


def exercise(
    id: str, title: str, *, solution: str, needs: Iterable[str] = ()
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register the decorated grader as exercise ``id``."""

    def decorate(grade: Callable[..., None]) -> Callable[..., None]:
        if id in EXERCISES:
            raise ValueError(f"exercise {id!r} is defined twice")
        EXERCISES[id] = Exercise(id, title, tuple(needs), solution.strip() + "\n", grade)
        return grade

    return decorate


@dataclass(frozen=True)
class Check:
    """The result of :func:`tlkit.exercises.check`, shown as one line in a notebook.

    Attributes:
        id: the exercise.
        passed: whether the answer is right.
        hint: what to look at when it is not (empty when it passed).
        attempted: False while the stub still holds ``...``.
    """

    id: str
    passed: bool
    hint: str = ""
    attempted: bool = True

    def __str__(self) -> str:
        if not self.attempted:
            return f"… {self.id} not attempted yet: replace the `...` in the cell above"
        if self.passed:
            return f"✓ {self.id} correct"
        return f"✗ {self.id}: {self.hint}"

    __repr__ = __str__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def __bool__(self) -> bool:
        return self.passed


class Solution(str):
    """A solution's source text; a notebook shows it as highlighted Python code."""

    exercise_id: str = ""

    def _repr_markdown_(self) -> str:
        return f"**Solution {self.exercise_id}**\n\n```python\n{self}```\n"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


# -- helpers for graders ------------------------------------------------------------------------
def require(condition: Any, hint: str) -> None:
    """Raise :class:`Wrong` with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise Wrong(hint)


def as_float(value: Any, what: str) -> float:
    """``value`` as a Python float (a 0-d tensor or numpy scalar works), or a hint."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Wrong(f"{what} should be a number, got {type(value).__name__}") from None
    require(math.isfinite(number), f"{what} is not a finite number")
    return number


def close(value: float, expected: float, *, rel: float = 1e-3, abs: float = 1e-6) -> bool:
    """Equal up to floating-point differences (other CPUs, thread counts, BLAS builds)."""
    return math.isclose(value, expected, rel_tol=rel, abs_tol=abs)


def require_run(answer: Any, what: str = "answer") -> Any:
    """``answer`` must be a :class:`tlkit.Run` (what ``tlkit.fit`` returns)."""
    require(
        hasattr(answer, "history") and hasattr(answer, "config") and hasattr(answer, "model"),
        f"{what} should be the Run that tlkit.fit returns, got {type(answer).__name__}",
    )
    return answer


def instance(answer: Any, family: str, hook: str) -> Any:
    """A strategy answer as an instance (a class is built with its defaults), checked for its
    family and hook."""
    obj = answer
    if isinstance(answer, type):
        try:
            obj = answer()
        except TypeError as exc:
            raise Wrong(f"the class must be constructible without arguments (defaults): {exc}") from None
    require(
        getattr(obj, "family", None) == family,
        f"a {family} strategy says so: give the class the attribute family = {family!r}",
    )
    require(getattr(obj, "name", None), "give the strategy a name (the class attribute `name`)")
    require(callable(getattr(obj, hook, None)), f"implement the hook {hook} (with @tlkit.hookimpl)")
    return obj


def last_dashboard_record(dash: Any) -> Any:
    """The dashboard's most recent run, finished and without error, or a hint."""
    require(
        hasattr(dash, "runs") and hasattr(dash, "options"),
        f"the answer should be the dashboard (tlkit.dashboard()), got {type(dash).__name__}",
    )
    require(dash.runs, "no run yet: press Train (or call dash.train()) first")
    record = dash.runs[-1]
    require(record.error is None, f"the last run failed ({record.error}); fix the form and retrain")
    require(record.run is not None, "the run is still training: wait for it (dash.wait())")
    return record

